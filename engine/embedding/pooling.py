"""Pooling token states into one vector per input, as sentence-transformers configures it."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.json_file import read_json

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len", "last")
# 1_Pooling/config.json flag -> our mode name
_ST_FLAGS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "last",
}


@dataclass(frozen=True)
class PoolingConfig:
    """How token states become one vector: `mode`, then L2 normalisation if `normalize`."""

    mode: str = "mean"
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise ValueError(f"pooling {self.mode!r} is not supported; use one of "
                             f"{', '.join(POOLING_MODES)}")

    @classmethod
    def from_folder(cls, folder: Path) -> PoolingConfig:
        """From modules.json + the Pooling module's config.json of a sentence-transformers
        folder; mean pooling with normalisation when the folder has neither."""
        modules = _read_modules(folder / "modules.json")
        if modules is None:
            return cls()
        pooling_dirs = [m.get("path", "") for m in modules if m.get("type", "").endswith(".Pooling")]
        mode = "mean"
        if pooling_dirs:
            cfg = read_json(folder / pooling_dirs[0] / "config.json")
            chosen = [name for flag, name in _ST_FLAGS.items() if cfg.get(flag)]
            if len(chosen) > 1:
                raise ValueError(f"{folder}: pooling modes {chosen} are combined; only one "
                                 "pooling mode at a time is supported")
            mode = chosen[0] if chosen else "mean"
        normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
        return cls(mode, normalize)


def _read_modules(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise TypeError(f"{path} must hold a JSON list of modules")
    return [m for m in data if isinstance(m, dict)]


def pool_padded(hidden: torch.Tensor, mask: torch.Tensor, config: PoolingConfig) -> torch.Tensor:
    """[batch, seq, dim] states with a [batch, seq] 0/1 mask -> [batch, dim] float32."""
    hidden = hidden.float()
    m = mask.to(hidden.dtype).unsqueeze(-1)
    lengths = mask.sum(dim=1)
    if config.mode in ("mean", "mean_sqrt_len"):
        summed = (hidden * m).sum(dim=1)
        counts = m.sum(dim=1).clamp(min=1e-9)
        out = summed / counts if config.mode == "mean" else summed / counts.sqrt()
    elif config.mode == "cls":
        out = hidden[:, 0]
    elif config.mode == "max":
        out = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    else:  # last: the last real token of each row (padding sits on the right)
        out = hidden[torch.arange(hidden.shape[0]), (lengths - 1).clamp(min=0)]
    return F.normalize(out, p=2, dim=-1) if config.normalize else out


def pool_packed(hidden: torch.Tensor, starts: list[int], config: PoolingConfig) -> torch.Tensor:
    """Packed [num_tokens, dim] states, sequence i at rows starts[i]:starts[i+1] -> [n, dim]."""
    rows = []
    for a, b in itertools.pairwise(starts):
        seq = hidden[a:b].float()
        if config.mode == "mean":
            rows.append(seq.mean(dim=0))
        elif config.mode == "mean_sqrt_len":
            rows.append(seq.sum(dim=0) / (b - a) ** 0.5)
        elif config.mode == "cls":
            rows.append(seq[0])
        elif config.mode == "max":
            rows.append(seq.max(dim=0).values)
        else:
            rows.append(seq[-1])
    out = torch.stack(rows)
    return F.normalize(out, p=2, dim=-1) if config.normalize else out
