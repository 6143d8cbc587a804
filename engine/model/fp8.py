"""FP8 (float8_e4m3fn) linear layers: W8A8 with fp32 accumulation, output in the model dtype.

Weights carry a dequantization scale per output channel, or per 128x128 block as block-scaled
checkpoints ship them; activations are quantized inside the op, per token (or per 1x128 group
for block-scaled weights), or with a static per-tensor `input_scale` from the checkpoint.
Two ways in: `quantization="fp8"` quantizes a bf16/fp32 model after loading
(`quantize_linears`), and FP8 checkpoints load as they are (`Fp8Spec.from_hf_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

FP8 = torch.float8_e4m3fn
SCALE_NAMES = ("weight_scale", "weight_scale_inv", "input_scale")
# quantization="fp8" scales weights per 128x128 block (activations per 1x128 group), as
# block-scaled FP8 checkpoints do. Measured on SmolLM2-135M (tests/engine/model/
# test_fp8_smollm2.py's text, float32 perplexity 7.05): per-channel weights with per-token
# activations gave 7.44 (+5.5%), 128x128 blocks 6.93 (within noise of the float model).
LOAD_TIME_BLOCK = 128


@dataclass(frozen=True)
class Fp8Spec:
    """How a model's linear layers are quantized."""

    block_size: int | None = None  # None: per-channel weight scales; else square blocks
    static_input: bool = False  # the checkpoint ships a per-tensor activation scale

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> Fp8Spec | None:
        """The FP8 layout an HF config.json declares, or None for an unquantized model.

        Two conventions are read: `quant_method: fp8` (static/dynamic activations, optional
        `weight_block_size`) and compressed-tensors with float 8-bit weights.
        """
        q = cfg.get("quantization_config")
        if not q:
            return None
        method = q.get("quant_method")
        if method == "fp8":
            block = q.get("weight_block_size")
            if block is not None and (len(block) != 2 or block[0] != block[1]):
                raise ValueError(f"weight_block_size {block} is not supported: square blocks only")
            return cls(block[0] if block else None, q.get("activation_scheme") == "static")
        if method == "compressed-tensors":
            return cls._from_compressed_tensors(q)
        raise ValueError(f"quantization method {method!r} is not supported (fp8 checkpoints only)")

    @classmethod
    def _from_compressed_tensors(cls, q: dict[str, Any]) -> Fp8Spec:
        groups = list((q.get("config_groups") or {}).values())
        if len(groups) != 1:
            raise ValueError("compressed-tensors checkpoints with one config group only")
        weights = groups[0].get("weights") or {}
        if weights.get("type") != "float" or weights.get("num_bits") != 8:
            raise ValueError(f"compressed-tensors weights {weights} are not FP8")
        block = None
        if weights.get("strategy") == "block":
            size = weights.get("block_structure") or [128, 128]
            if size[0] != size[1]:
                raise ValueError(f"block_structure {size} is not supported: square blocks only")
            block = int(size[0])
        acts = groups[0].get("input_activations") or {}
        return cls(block, bool(acts) and not acts.get("dynamic", True))


class Fp8Linear(nn.Module):
    """y = x @ W^T (+ b) with W in FP8 and its dequantization scales beside it."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool, spec: Fp8Spec,
        ops: SimpleNamespace,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.ops = ops
        self.block_size = spec.block_size
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=FP8),
                                   requires_grad=False)
        if spec.block_size is None:
            scale_shape: tuple[int, ...] = (out_features,)
        else:
            b = spec.block_size
            scale_shape = (-(-out_features // b), -(-in_features // b))
        self.weight_scale = nn.Parameter(torch.empty(scale_shape, dtype=torch.float32),
                                         requires_grad=False)
        self.input_scale = (
            nn.Parameter(torch.empty(1, dtype=torch.float32), requires_grad=False)
            if spec.static_input else None
        )
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.fp8_linear(x, self.weight, self.weight_scale, self.bias, self.input_scale)

    def extra_repr(self) -> str:
        scales = "per-channel" if self.block_size is None else f"{self.block_size}x{self.block_size} blocks"
        return f"in={self.in_features}, out={self.out_features}, fp8 {scales}"

    @classmethod
    def from_linear(cls, linear: nn.Linear, ops: SimpleNamespace,
                    block_size: int | None = LOAD_TIME_BLOCK) -> Fp8Linear:
        """Quantize a loaded linear layer (per block, or per output channel with None)."""
        spec = Fp8Spec(block_size)
        out = cls(linear.in_features, linear.out_features, linear.bias is not None, spec, ops)
        weight, scale = ops.quantize_fp8_weight(linear.weight.detach().contiguous(), block_size)
        out.weight = nn.Parameter(weight, requires_grad=False)
        out.weight_scale = nn.Parameter(scale.float().reshape(out.weight_scale.shape),
                                        requires_grad=False)
        if linear.bias is not None:
            out.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return out


def keeps_dtype(module: nn.Module, param_name: str) -> bool:
    """FP8 weights and float32 scales are not cast to the model's compute dtype."""
    return isinstance(module, Fp8Linear) and param_name != "bias"


def quantize_linears(model: nn.Module, ops: SimpleNamespace) -> int:
    """Replace every linear layer inside the decoder layers with its FP8 version.

    The LM head and the embeddings stay in the compute dtype (they are outside `layers`).
    Returns how many layers were quantized.
    """
    count = 0
    for layer in model.layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Fp8Linear.from_linear(child, ops))
                    count += 1
    return count


def copy_scale(dest: torch.Tensor, kind: str, tensor: torch.Tensor, rows: slice | None,
               block_size: int | None, already: bool) -> int:
    """Copy one checkpoint scale tensor into an Fp8Linear's scale; returns elements filled.

    Fused projections (q/k/v, gate/up) get each part's scale on that part's rows: a
    per-tensor weight scale is broadcast over its rows; block scales are sliced in blocks.
    Static input scales of fused parts (one input, several scales) keep the largest, so
    no part's activations clip.
    """
    tensor = tensor.float()
    if kind == "input_scale":
        value = tensor.reshape(-1).max().reshape(1)
        dest.copy_(torch.maximum(dest, value) if already else value)
        return 0 if already else 1
    if block_size is not None:
        if rows is not None:
            if rows.start % block_size or rows.stop % block_size:
                raise ValueError(
                    f"fused projection rows {rows.start}:{rows.stop} do not align to "
                    f"{block_size}-row scale blocks")
            rows = slice(rows.start // block_size, rows.stop // block_size)
        target = dest if rows is None else dest[rows]
        if tuple(target.shape) != tuple(tensor.shape):
            raise ValueError(f"block scale of shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
        target.copy_(tensor)
        return target.numel()
    target = dest if rows is None else dest[rows]
    if tensor.numel() == 1:
        target.fill_(tensor.reshape(()).item())
    elif tensor.numel() == target.numel():
        target.copy_(tensor.reshape(-1))
    else:
        raise ValueError(f"weight scale of shape {tuple(tensor.shape)} fits neither per-tensor "
                         f"nor per-channel ({target.numel()} rows)")
    return target.numel()
