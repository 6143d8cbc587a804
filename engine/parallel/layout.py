"""Which part of each weight a tensor-parallel rank holds (Megatron-style splits).

Column-parallel (split along output rows): q/k/v, gate/up, the embedding and the LM head
(by vocabulary). Row-parallel (split along input columns): o_proj and down_proj, whose
partial outputs are summed by one all-reduce; their bias is added by rank 0 only.
With fewer KV heads than ranks each KV head is replicated on size // num_kv_heads ranks
(as vLLM does). Pure arithmetic: no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from engine.config import ModelConfig

_LAYER = re.compile(r"model\.layers\.\d+\.(self_attn|mlp)\.(\w+)\.(\w+)")
_SCALES = ("weight_scale", "weight_scale_inv")


@dataclass(frozen=True)
class Split:
    """Rows (dim 0) or columns (dim 1) [start, stop) of the full tensor; `size` is the
    local length, which exceeds stop - start by zero padding (the vocabulary's last rank)."""

    dim: int
    start: int
    stop: int
    size: int


ZERO: Literal["zero"] = "zero"  # this rank holds zeros of the full shape (row-parallel bias)


@dataclass(frozen=True)
class TPLayout:
    rank: int
    size: int
    full: ModelConfig
    heads: int  # local query heads
    head_start: int
    kv_heads: int  # local KV heads (1 when replicated)
    kv_head_start: int
    inter: int  # local MLP width
    vocab: int  # local vocabulary rows (the padded vocabulary / size)

    @property
    def vocab_start(self) -> int:
        return self.rank * self.vocab

    def local_config(self) -> ModelConfig:
        """The shape each rank's modules are built with (its heads, MLP width, vocab rows)."""
        return replace(self.full, num_heads=self.heads, num_kv_heads=self.kv_heads,
                       intermediate_size=self.inter, vocab_size=self.vocab)

    def split(self, hf_name: str, shape: tuple[int, ...], fp8_block: int | None = None
              ) -> Split | Literal["zero"] | None:
        """This rank's part of an HF-named tensor of `shape`; None: the whole tensor."""
        hd = self.full.head_dim
        if hf_name in ("model.embed_tokens.weight", "lm_head.weight"):
            full = self.full.vocab_size
            start = min(self.vocab_start, full)
            return Split(0, start, min(start + self.vocab, full), self.vocab)
        m = _LAYER.fullmatch(hf_name)
        if m is None:
            return None  # norms
        module, kind = m.group(2), m.group(3)
        if module == "q_proj":
            rows = Split(0, self.head_start * hd, (self.head_start + self.heads) * hd,
                         self.heads * hd)
        elif module in ("k_proj", "v_proj"):
            rows = Split(0, self.kv_head_start * hd, (self.kv_head_start + self.kv_heads) * hd,
                         self.kv_heads * hd)
        elif module in ("gate_proj", "up_proj"):
            rows = Split(0, self.rank * self.inter, (self.rank + 1) * self.inter, self.inter)
        elif module == "o_proj":
            rows = Split(1, self.head_start * hd, (self.head_start + self.heads) * hd,
                         self.heads * hd)
        elif module == "down_proj":
            rows = Split(1, self.rank * self.inter, (self.rank + 1) * self.inter, self.inter)
        else:
            return None
        if kind == "bias":
            if rows.dim == 1:  # added once, after the all-reduce sums the partial outputs
                return None if self.rank == 0 else ZERO
            return rows
        if kind == "input_scale":
            return None
        if kind in _SCALES:
            return _scale_split(hf_name, rows, shape, fp8_block)
        return rows


def _scale_split(name: str, rows: Split, shape: tuple[int, ...], block: int | None
                 ) -> Split | None:
    """FP8 weight scales follow their weight: block scales on block boundaries, per-channel
    scales of a column-parallel weight by rows; per-tensor scales whole."""
    numel = 1
    for n in shape:
        numel *= n
    if numel == 1:
        return None
    if block is not None and len(shape) == 2:
        if rows.start % block or rows.stop % block:
            raise ValueError(
                f"{name}: this rank's part [{rows.start}, {rows.stop}) does not fall on "
                f"{block}-wide scale blocks; choose a tensor_parallel_size that divides the "
                f"blocks evenly")
        return Split(rows.dim, rows.start // block, -(-rows.stop // block),
                     -(-rows.size // block))
    return rows if rows.dim == 0 else None


def tp_layout(config: ModelConfig, rank: int, size: int) -> TPLayout:
    """Rank `rank` of `size`'s layout; ValueError when the model cannot be split that way."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is outside a tensor-parallel group of {size}")
    heads, kv = config.num_heads, config.num_kv_heads
    if heads % size:
        raise ValueError(f"the model's {heads} attention heads do not divide evenly over "
                         f"tensor_parallel_size {size}")
    if kv % size and size % kv:
        raise ValueError(f"the model's {kv} KV heads cannot be split over tensor_parallel_size "
                         f"{size}: one must divide the other")
    if config.intermediate_size % size:
        raise ValueError(f"the model's MLP width {config.intermediate_size} does not divide "
                         f"evenly over tensor_parallel_size {size}")
    local_heads = heads // size
    if kv >= size:
        local_kv, kv_start = kv // size, rank * (kv // size)
    else:  # replicated: rank r's query heads belong to KV head r // (size // kv)
        local_kv, kv_start = 1, rank // (size // kv)
    return TPLayout(rank, size, config, local_heads, rank * local_heads, local_kv, kv_start,
                    config.intermediate_size // size, -(-config.vocab_size // size))
