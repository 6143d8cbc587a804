"""The chat page: GET / and GET /ui/{file}, static files shipped in serving/web/.

The files are read once at start-up (a fixed list: no path from the URL ever reaches the
file system) and served with a Content-Security-Policy that allows nothing from another
origin and no inline script or style, so model output the page shows can never run. The page
itself is public (like /health): it holds no user data; every call it makes to /v1 sends the
API key the user typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from serving.errors import APIError

WEB_DIR = Path(__file__).resolve().parent / "web"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Small files, re-read after an upgrade: revalidate rather than serve a stale page.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


def load_assets(folder: Path = WEB_DIR) -> dict[str, Asset]:
    """Every servable file of the page, by name (index.html included)."""
    if not (folder / "index.html").is_file():
        raise FileNotFoundError(f"the chat page is missing: {folder / 'index.html'}")
    return {p.name: Asset(p.read_bytes(), CONTENT_TYPES[p.suffix])
            for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in CONTENT_TYPES}


def _response(asset: Asset) -> web.Response:
    response = web.Response(body=asset.body, headers=SECURITY_HEADERS)
    response.headers["Content-Type"] = asset.content_type
    return response


def add_web_routes(app: web.Application) -> None:
    assets = load_assets()

    async def index(request: web.Request) -> web.Response:
        return _response(assets["index.html"])

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise APIError(404, f"Not found: GET {request.path}", code="not_found")
        return _response(assets[name])

    app.router.add_get("/", index)
    app.router.add_get("/ui/{name}", static)
