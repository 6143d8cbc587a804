"""int8 weights on the CPU: the layer's error is bounded by its quantization steps, and a
quantized model keeps its float twin's predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.model.int8 import Int8Linear, quantize_int8_per_channel
from engine.model.loader import load_model
from engine.worker.model_runner import ModelRunner, SequenceChunk


def test_per_channel_round_trip_within_half_a_step() -> None:
    w = torch.randn(64, 48) * torch.logspace(-3, 1, 64)[:, None]  # rows of very different size
    w[5] = 0  # an all-zero row must not divide by zero
    q, scale = quantize_int8_per_channel(w)
    assert q.dtype == torch.int8 and scale.shape == (64,)
    err = (q.float() * scale[:, None] - w).abs()
    assert (err <= scale[:, None] / 2 + 1e-7).all()
    assert torch.equal(q[5], torch.zeros_like(q[5]))


def test_rejects_non_matrix_weights() -> None:
    with pytest.raises(ValueError, match="2-D"):
        quantize_int8_per_channel(torch.randn(4, 4, 4))


def _bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-output error bound: weight rounding (half a step per weight) plus 8-bit
    activations over each row's [min, max] (half a step per element)."""
    _, scale = quantize_int8_per_channel(w)
    x_step = (x.amax(1) - x.amin(1)) / 255
    w_part = x.abs() @ (scale[:, None] / 2).expand_as(w).t()
    x_part = x_step[:, None] / 2 * w.abs().sum(1)[None, :]
    return 1.5 * (w_part + x_part) + 1e-5


@pytest.mark.parametrize("rows", [1, 7])
def test_linear_error_within_its_quantization_bound(rows: int) -> None:
    linear = nn.Linear(96, 40, bias=True)
    x = torch.randn(rows, 96)
    x[-1] *= 50  # an outlier token must not widen the others' activation range
    layer = Int8Linear.from_linear(linear)
    with torch.no_grad():
        expected = linear(x)
    got = layer(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert ((got - expected).abs() <= _bound(x, linear.weight.detach())).all()


def test_linear_keeps_leading_dims_and_empty_batches() -> None:
    layer = Int8Linear(torch.randn(8, 16))
    assert layer(torch.randn(2, 3, 16)).shape == (2, 3, 8)
    assert layer(torch.randn(0, 16)).shape == (0, 8)


def _logits(model: nn.Module, ids: list[int]) -> torch.Tensor:
    blocks = -(-len(ids) // 16)
    runner = ModelRunner(model, num_blocks=blocks, block_size=16, device=torch.device("cpu"))
    input_ids, positions, meta = runner.prepare([SequenceChunk(ids, 0, list(range(blocks)))])
    with torch.inference_mode():
        return model.compute_logits(model(input_ids, positions, runner.kv_caches, meta))


def test_quantized_model_keeps_float_predictions(tiny_llama: Path) -> None:
    cpu = torch.device("cpu")
    ids = list(range(3, 40))
    base = _logits(load_model(tiny_llama, torch.float32, cpu).model, ids)
    loaded = load_model(tiny_llama, torch.float32, cpu, quantization="int8")
    layers = [m for m in loaded.model.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 4 * loaded.config.num_layers + 1  # qkv, o, gate_up, down; LM head
    assert not any(type(m) is nn.Linear for m in loaded.model.modules())
    got = _logits(loaded.model, ids)
    # Several layers of 8-bit rounding: a few percent of the logits' own size, and the same
    # greedy token nearly everywhere (random tiny models have near-ties).
    rel = ((got - base).norm() / base.norm()).item()
    agree = (got.argmax(-1) == base.argmax(-1)).float().mean().item()
    assert rel < 0.1
    assert agree >= 0.75  # chance would be 1 / vocab


def test_int8_refuses_a_gpu_weight() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU tensor")
    with pytest.raises(ValueError, match="CPU"):
        Int8Linear(torch.randn(4, 4, device="cuda"))
