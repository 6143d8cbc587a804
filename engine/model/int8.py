"""int8 weights on the CPU: per-output-channel symmetric scales, fbgemm's dynamic int8 GEMM.

`quantization="int8"` (and the default for GGUF files whose tensors are 4/5/8-bit) turns
every decoder projection and the LM head into an `Int8Linear` after loading. The GEMM is
`torch.ops.quantized.linear_dynamic`: it quantizes the activations per call inside one op
and multiplies on fbgemm's int8 kernels (AVX2 / AVX-512 VNNI). Measured on the 2-core dev
machine for SmolLM2's shapes (min of 30 calls, 3072x576): 33 us against 142 us float32 at
M=1, 54 against 422 at M=8. oneDNN's qlinear_pointwise (the non-deprecated x86 path) took
83 us at M=1 because the activations must then be quantized by separate Python-side ops;
so fbgemm it is. Only its packing step builds a quantized tensor (the deprecated API in
torch 2.13, warned once at load time); the op that runs per step takes float tensors.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

# A row of zeros gets this scale instead of a division by zero.
MIN_SCALE = 1e-12


def _has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


# reduce_range=True quantizes activations to 7 bits: without VNNI, fbgemm adds pairs of
# uint8 x int8 products in int16, which 8-bit activations can saturate. With VNNI the
# products accumulate in int32, so the full 8 bits are safe. Measured on SmolLM2 (the
# perplexity text of tests/engine/model/test_fp8_smollm2.py; float32 7.05): 7 bits 7.60
# (+7.7%), 8 bits 6.97 (-1.1%).
REDUCE_RANGE = not _has_vnni()


def quantize_int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w[N, K] -> (int8 [N, K], float32 scale [N]) with w ~= q * scale[:, None]."""
    if w.dim() != 2:
        raise ValueError(f"int8 quantization expects a 2-D weight, got shape {tuple(w.shape)}")
    wf = w.detach().float()
    scale = (wf.abs().amax(dim=1) / 127.0).clamp_min(MIN_SCALE)
    q = torch.round(wf / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def _pack(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    zero_points = torch.zeros(q.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        # The quantized-tensor constructor is deprecated; packing is its only use here.
        warnings.simplefilter("ignore", UserWarning)
        qt = torch._make_per_channel_quantized_tensor(q, scale.double(), zero_points, 0)
    return torch.ops.quantized.linear_prepack(qt, None)


class Int8Linear(nn.Module):
    """y = x @ (q * scale).T + bias, float in and out; the weight lives only packed."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight.device.type != "cpu":
            raise ValueError("int8 weights run on the CPU only (fbgemm); use fp8 on a GPU")
        self.out_features, self.in_features = weight.shape
        q, scale = quantize_int8_per_channel(weight)
        self.packed = _pack(q, scale)  # bias added after the per-token rescale
        self.weight_rowsum = (q.float() * scale[:, None]).sum(dim=1)[None, :]  # [1, N]
        self.bias = None if bias is None else bias.detach().float().clone()
        self.weight_bytes = q.numel() + 4 * scale.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        if x2.dtype != torch.float32:  # fbgemm takes float32 activations
            x2 = x2.float()
        if x2.shape[0] == 0:
            return x.new_empty(*shape[:-1], self.out_features)
        if x2.shape[0] == 1:
            y = torch.ops.quantized.linear_dynamic(x2, self.packed, REDUCE_RANGE)
        else:
            # fbgemm picks one activation range per call, over all rows; one outlier token
            # would flatten the others (SmolLM2 perplexity 7.05 -> 12.0 over a 200-token
            # prefill). Each row mapped onto [0, 1] makes the range per token:
            # W x = span * (W x01) + lo * rowsum(W), rowsum of the int8 weight as packed.
            # amin + amax: torch.aminmax(dim=1) took 5-8x as long at these shapes (measured).
            lo, hi = x2.amin(dim=1, keepdim=True), x2.amax(dim=1, keepdim=True)
            span = (hi - lo).clamp_min(MIN_SCALE)
            y = torch.ops.quantized.linear_dynamic((x2 - lo) / span, self.packed, REDUCE_RANGE)
            y.mul_(span).addmm_(lo, self.weight_rowsum)
        if self.bias is not None:
            y.add_(self.bias)
        if x.dtype != torch.float32:
            y = y.to(x.dtype)
        return y if x.dim() == 2 else y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, int8 per-channel"

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        return cls(linear.weight, linear.bias)


def quantize_model_int8(model: nn.Module) -> int:
    """Replace every decoder projection and the LM head with Int8Linear; returns how many.

    A tied LM head gets its own int8 copy of the embedding matrix (the lookup table stays
    float: one row per token is read, the GEMM reads all of them).
    """
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("quantization='int8' runs on the CPU only (fbgemm kernels)")
    count = 0
    for layer in model.layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Int8Linear.from_linear(child))
                    count += 1
    head = model.embed_tokens.weight if model.lm_head is None else model.lm_head.weight
    model.lm_head = Int8Linear(head)
    return count + 1
