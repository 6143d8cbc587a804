"""The chat page's static side, without a browser: what / and /ui/* serve, the
Content-Security-Policy, no other origin anywhere in the page, no HTML built from strings,
the files shipped in a wheel, and the model card's sampling defaults the page shows."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from serving.web_ui import WEB_DIR
from tests.conftest import REPO
from tests.serving.conftest import Api, assert_error

PAGE_FILES = sorted(p.name for p in WEB_DIR.iterdir() if p.is_file())


def csp_directives(header: str) -> dict[str, list[str]]:
    out = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


async def test_page_is_served_with_a_self_only_policy(api: Api) -> None:
    resp = await api.get("/", key=None)  # the page itself needs no key; its API calls do
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.text == (WEB_DIR / "index.html").read_text()
    csp = csp_directives(resp.headers["Content-Security-Policy"])
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"] and csp["object-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    for sources in csp.values():  # nothing from another origin, nothing inline
        assert set(sources) <= {"'self'", "'none'", "data:", "blob:"}, sources
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name", PAGE_FILES)
async def test_every_page_file_is_served(api: Api, name: str) -> None:
    resp = await api.get(f"/ui/{name}", key=None)
    assert resp.status == 200, resp.text
    expected = {".js": "text/javascript", ".css": "text/css", ".html": "text/html",
                ".svg": "image/svg+xml"}[Path(name).suffix]
    assert resp.headers["Content-Type"].startswith(expected)
    assert resp.text == (WEB_DIR / name).read_text()
    assert "Content-Security-Policy" in resp.headers


async def test_unknown_page_paths_are_404s(api: Api) -> None:
    for path in ("/ui/nope.js", "/ui/..%2Fweb_ui.py", "/ui/%2e%2e/app.py", "/index.html"):
        assert_error(await api.get(path, key=None), 404)


async def test_page_answers_while_models_load(api: Api) -> None:
    api.state.ready = False
    try:
        assert (await api.get("/", key=None)).status == 200
        assert (await api.get("/ui/app.js", key=None)).status == 200
        assert_error(await api.get("/v1/models"), 503, code="not_ready")
    finally:
        api.state.ready = True


def test_page_references_only_its_own_files() -> None:
    html = (WEB_DIR / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs, "the page loads no script or style?"
    for ref in refs:
        assert ref.startswith("/ui/") and ref[4:] in PAGE_FILES, ref
    imports = [m for p in WEB_DIR.glob("*.js")
               for m in re.findall(r'^import .* from "([^"]+)";', p.read_text(), re.MULTILINE)]
    assert imports and all(m.startswith("./") and m[2:] in PAGE_FILES for m in imports), imports


@pytest.mark.parametrize("name", PAGE_FILES)
def test_no_other_origin_and_no_inline_code(name: str) -> None:
    text = (WEB_DIR / name).read_text()
    # An SVG's xmlns is a name, not a place anything is loaded from.
    urls = [u for u in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'<>)]*", text)
            if u != "http://www.w3.org/2000/svg"]
    assert urls == [], urls
    assert "@import" not in text and "url(" not in text  # no fonts or images from elsewhere
    if name.endswith(".html"):
        assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text) is None  # inline script
        assert re.search(r"\son\w+=", text) is None  # inline event handlers
        assert re.search(r"\sstyle=", text) is None  # inline styles (the CSP refuses them)


@pytest.mark.parametrize("name", [n for n in PAGE_FILES if n.endswith(".js")])
def test_script_never_builds_html_from_strings(name: str) -> None:
    """Model output reaches the page as text nodes only: no API that parses HTML."""
    # Comment lines may name the APIs; code may not.
    text = re.sub(r"^\s*//[^\n]*", "", (WEB_DIR / name).read_text(), flags=re.MULTILINE)
    for api in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                "eval(", "new Function", "DOMParser", "createContextualFragment"):
        assert api not in text, f"{name} uses {api}"


def test_wheel_ships_the_page(tmp_path: Path) -> None:
    """The package data of pyproject.toml: a wheel built from the project holds every file
    of serving/web (so `pip install .` serves the page, not only an editable checkout)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "serving", src / "serving",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                         check=False, cwd=src, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"serving/web/{n}" for n in PAGE_FILES} <= names
    assert "serving/web_ui.py" in names


async def test_chat_model_cards_carry_the_sampling_defaults(api: Api) -> None:
    card = (await api.get("/v1/models")).json["data"][0]
    # OpenAI's defaults, which the engine applies to a request that leaves them out.
    assert card["sampling_defaults"] == {"temperature": 1.0, "top_p": 1.0,
                                         "max_tokens": None, "seed": None}
