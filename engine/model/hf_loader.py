"""HF-style folders: config.json, *.safetensors (sharded with an index, or not), tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open

from engine.config import ModelConfig
from engine.json_file import read_json
from engine.model.checkpoint import LoadedModel, copy_weights, empty_model, pad_rows, sharding
from engine.model.fp8 import Fp8Spec
from engine.parallel.layout import ZERO, TPLayout

if TYPE_CHECKING:
    from engine.parallel.comm import TPComm
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


def iter_safetensors(
    files: list[Path], layout: TPLayout | None = None, fp8_block: int | None = None,
) -> Iterator[tuple[str, torch.Tensor, int]]:
    """One tensor at a time from memory-mapped files, so nothing is held twice. With a
    tensor-parallel `layout`, only the rank's part of each tensor is read from the file."""
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 -- safe_open is not a dict
                    if layout is None:
                        yield name, f.get_tensor(name), 0
                        continue
                    part = f.get_slice(name)
                    split = layout.split(name, tuple(part.get_shape()), fp8_block)
                    if split is None:
                        yield name, f.get_tensor(name), 0
                    elif split == ZERO:
                        yield name, f.get_tensor(name).zero_(), 0
                    else:
                        rows = slice(split.start, split.stop)
                        tensor = part[rows] if split.dim == 0 else part[:, rows]
                        yield name, pad_rows(tensor, split), 0
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
    folder: Path, dtype: torch.dtype, device: torch.device, ops: SimpleNamespace,
    comm: TPComm | None = None,
) -> LoadedModel:
    config, fp8 = read_hf_config(folder)
    files = safetensors_files(folder)
    shard = sharding(comm, config)
    model = empty_model(config, dtype, device, ops, fp8, shard)
    layout = None if shard is None else shard.layout
    copy_weights(model, iter_safetensors(files, layout, fp8.block_size if fp8 else None),
                 folder)
    tokenizer = Tokenizer.from_dir(folder)
    return LoadedModel(model, config, tokenizer, eos_ids(folder, config, tokenizer), folder)
