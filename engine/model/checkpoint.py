"""What every loader shares: the loaded bundle, resolving a model name to a path, the empty
model in its final dtype, and copying HF-named tensors into it.

The model is built on the meta device and its storage allocated once in the compute dtype;
tensors are then copied in one at a time (fused QKV / gate-up slices included), so peak
memory stays near the model's size rather than twice it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
from torch import nn

import weights
from engine.config import ModelConfig
from engine.model.fp8 import SCALE_NAMES, Fp8Spec, copy_scale, keeps_dtype
from engine.model.llama import LlamaForCausalLM
from engine.parallel.layout import Split, TPLayout, tp_layout
from engine.tokenizer import Tokenizer

if TYPE_CHECKING:
    from engine.parallel.comm import TPComm

_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")


@dataclass
class LoadedModel:
    model: LlamaForCausalLM
    config: ModelConfig  # the whole model's shape (model.config is a rank's share under TP)
    tokenizer: Tokenizer
    eos_token_ids: frozenset[int]  # every token id that ends generation
    path: Path


def resolve_model_path(model: str | Path) -> Path:
    """A registered short name, an HF-style folder, or a .gguf file -> an existing path."""
    name = str(model)
    if name in weights.MODELS:
        path = weights.model_path(name)
        if not path.exists():
            raise FileNotFoundError(
                f"model {name!r} is registered but not fetched yet (expected at {path}); "
                f"run: python -m weights.fetch {name}"
            )
        return path
    path = Path(name).expanduser()
    if not path.exists():
        known = ", ".join(sorted(weights.MODELS))
        raise FileNotFoundError(
            f"model path {path} does not exist (registered names: {known})"
        )
    return path


@dataclass(frozen=True)
class Sharding:
    """A tensor-parallel rank's place: its collectives and which part of each weight."""

    comm: TPComm
    layout: TPLayout


def sharding(comm: TPComm | None, config: ModelConfig) -> Sharding | None:
    """The rank's sharding of a model of this shape; None without tensor parallelism."""
    if comm is None:
        return None
    return Sharding(comm, tp_layout(config, comm.rank, comm.size))


def empty_model(
    config: ModelConfig, dtype: torch.dtype, device: torch.device, ops: SimpleNamespace,
    fp8: Fp8Spec | None = None, shard: Sharding | None = None,
) -> LlamaForCausalLM:
    """Allocate the model's storage once, in the compute dtype, without initialising it
    (only the rank's share under tensor parallelism).

    FP8 weights and their float32 scales keep their own dtypes.
    """
    with torch.device("meta"):
        if shard is None:
            model = LlamaForCausalLM(config, ops, fp8)
        else:
            model = LlamaForCausalLM(shard.layout.local_config(), ops, fp8, shard.comm,
                                     shard.layout)
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if not keeps_dtype(module, name):
                setattr(module, name, nn.Parameter(param.to(dtype), requires_grad=False))
    model = model.to_empty(device=device)
    if device.type == "cpu":
        transpose_linear_storage(model)
    model.rotary.reset(device)
    return model.eval().requires_grad_(False)


def transpose_linear_storage(model: nn.Module) -> None:
    """Store each linear weight as [in, out] in memory, still seen as [out, in].

    F.linear on such a view runs as x @ W with W row-major, which MKL does up to 1.5x
    faster on the CPU at decode and small-batch shapes (measured for SmolLM2's shapes).
    The loader copies into the view as usual.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            w = module.weight
            module.weight = nn.Parameter(
                torch.empty(w.shape[1], w.shape[0], dtype=w.dtype, device=w.device).t(),
                requires_grad=False,
            )


def param_target(hf_name: str, config: ModelConfig) -> tuple[str, slice | None] | None:
    """Where an HF tensor goes in our model: (parameter name, rows of a fused matrix)."""
    if hf_name == "lm_head.weight":
        return None if config.tie_word_embeddings else ("lm_head.weight", None)
    if hf_name.startswith("model.") and not hf_name.startswith("model.layers."):
        return hf_name[len("model."):], None
    m = _LAYER.fullmatch(hf_name)
    if m is None:
        return None
    prefix, rest = f"layers.{m.group(1)}.", m.group(2)
    q, kv, inter = config.q_size, config.kv_size, config.intermediate_size
    fused = {
        "self_attn.q_proj": ("self_attn.qkv_proj", slice(0, q)),
        "self_attn.k_proj": ("self_attn.qkv_proj", slice(q, q + kv)),
        "self_attn.v_proj": ("self_attn.qkv_proj", slice(q + kv, q + 2 * kv)),
        "mlp.gate_proj": ("mlp.gate_up_proj", slice(0, inter)),
        "mlp.up_proj": ("mlp.gate_up_proj", slice(inter, 2 * inter)),
    }
    module, _, kind = rest.rpartition(".")
    if kind == "weight_scale_inv":  # block-scaled checkpoints: also a dequantization factor
        kind = "weight_scale"
    if module in fused:
        target, rows = fused[module]
        return f"{prefix}{target}.{kind}", rows
    return f"{prefix}{module}.{kind}", None


def copy_weights(
    model: LlamaForCausalLM, tensors: Iterable[tuple[str, torch.Tensor, int]], source: Path
) -> None:
    """Copy HF-named tensors into the model; every parameter must be filled exactly.

    Each item is (name, rows of the tensor, index of the first row), so a loader may
    stream a big matrix in blocks of rows.
    """
    params = dict(model.named_parameters())
    filled: dict[str, int] = {}
    for name, tensor, first_row in tensors:
        target = param_target(name, model.config)
        if target is None:
            continue
        pname, rows = target
        if pname not in params:
            raise ValueError(f"{source}: unexpected tensor {name} for this config")
        kind = name.rpartition(".")[2]
        if kind in SCALE_NAMES:
            module = model.get_submodule(pname.rpartition(".")[0])
            filled[pname] = filled.get(pname, 0) + copy_scale(
                params[pname].data, kind, tensor, rows, module.block_size, pname in filled)
            continue
        dest = params[pname].data if rows is None else params[pname].data[rows]
        if dest.dtype == torch.float8_e4m3fn and tensor.dtype != dest.dtype:
            raise ValueError(f"{source}: {name} is {tensor.dtype}, but the checkpoint's "
                             "quantization_config says its weights are float8_e4m3fn")
        if tensor.dim() > 1:
            dest = dest[first_row : first_row + tensor.shape[0]]
        if tuple(dest.shape) != tuple(tensor.shape):
            raise ValueError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(dest.shape)}"
            )
        dest.copy_(tensor)
        filled[pname] = filled.get(pname, 0) + dest.numel()
    missing = [n for n, p in params.items() if filled.get(n, 0) != p.numel()]
    if missing:
        raise ValueError(f"{source}: checkpoint lacks tensors for {', '.join(missing[:5])}")


def pad_rows(tensor: torch.Tensor, split: Split) -> torch.Tensor:
    """A row split shorter than the rank's share (the vocabulary's last rank), zero-padded."""
    missing = split.size - (split.stop - split.start)
    if split.dim != 0 or missing <= 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros(missing, *tensor.shape[1:])])
