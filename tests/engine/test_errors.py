"""Bad input gets a clear error that names what was wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine import LLM, SamplingParams


def test_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        LLM(str(missing))


def test_file_that_is_not_a_model(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="is not a model"):
        LLM(str(junk))


def test_corrupt_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(ValueError, match=str(bad)):
        LLM(str(bad))


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        LLM(str(tmp_path))


def test_corrupt_safetensors(tiny_llama: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama, broken)
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ValueError, match="model.safetensors"):
        LLM(str(broken))


def test_missing_tensor(tiny_llama: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    shutil.copytree(tiny_llama, partial)
    tensors = load_file(partial / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, partial / "model.safetensors")
    with pytest.raises(ValueError, match="lacks tensors for norm.weight"):
        LLM(str(partial))


@pytest.mark.parametrize("dtype", ["int8", "float64", "fp8"])
def test_wrong_dtype(tiny_llama: Path, dtype: str) -> None:
    with pytest.raises(ValueError, match="dtype"):
        LLM(str(tiny_llama), dtype=dtype)


def test_bad_device(tiny_llama: Path) -> None:
    with pytest.raises(ValueError, match="device"):
        LLM(str(tiny_llama), device="tpu:7")


def test_prompt_errors(tiny_llama: Path) -> None:
    llm = LLM(str(tiny_llama), max_model_len=64)
    with pytest.raises(ValueError, match="empty"):
        llm.generate([[]], SamplingParams())
    with pytest.raises(ValueError, match="100 tokens but the model's context is 64"):
        llm.generate([[5] * 100], SamplingParams())
    with pytest.raises(ValueError, match="token ids"):
        llm.generate([[10**6]], SamplingParams())
    with pytest.raises(ValueError, match="max_model_len"):
        LLM(str(tiny_llama), max_model_len=10**6)
