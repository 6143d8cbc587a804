"""HF-style folders: config.json, *.safetensors (sharded with an index, or not), tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors import SafetensorError, safe_open

from engine.config import ModelConfig
from engine.json_file import read_json
from engine.model.checkpoint import LoadedModel, copy_weights, empty_model
from engine.model.fp8 import Fp8Spec
from engine.tokenizer import Tokenizer


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(read_json(index).get("weight_map", {}).values()))
        files = [folder / n for n in names]
        absent = [str(f) for f in files if not f.exists()]
        if absent:
            raise FileNotFoundError(f"{index} names shards that do not exist: {absent}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no *.safetensors weights")
    return files


def iter_safetensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor, int]]:
    """One tensor at a time from memory-mapped files, so nothing is held twice."""
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 -- safe_open is not a dict
                    yield name, f.get_tensor(name), 0
        except SafetensorError as e:
            raise ValueError(f"{file} is not a valid safetensors file: {e}") from e


def eos_ids(folder: Path, config: ModelConfig, tokenizer: Tokenizer) -> frozenset[int]:
    """EOS ids from generation_config.json, config.json and the tokenizer, united."""
    ids = set(config.eos_token_ids)
    gen = folder / "generation_config.json"
    if gen.exists():
        eos = read_json(gen).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(int(i) for i in ids)


def read_hf_config(folder: Path) -> tuple[ModelConfig, Fp8Spec | None]:
    """The model's shape and its FP8 layout (None when unquantized) from config.json."""
    config_path = folder / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{folder} is not a model folder: it has no config.json")
    raw = read_json(config_path)
    try:
        return ModelConfig.from_hf_config(raw), Fp8Spec.from_hf_config(raw)
    except KeyError as e:
        raise ValueError(f"{config_path} lacks the field {e.args[0]!r}") from e


def load_hf_folder(
    folder: Path, dtype: torch.dtype, device: torch.device, ops: SimpleNamespace
) -> LoadedModel:
    config, fp8 = read_hf_config(folder)
    files = safetensors_files(folder)
    model = empty_model(config, dtype, device, ops, fp8)
    copy_weights(model, iter_safetensors(files), folder)
    tokenizer = Tokenizer.from_dir(folder)
    return LoadedModel(model, config, tokenizer, eos_ids(folder, config, tokenizer), folder)
