"""Each tensor-parallel rank reads only its share of the weights (safetensors and GGUF):
its resident parameter bytes are half the model's at TP=2 (plus the replicated norms),
and the shares put side by side are the whole model's weights."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import torch

from engine.model.loader import load_model
from tests.engine.model.test_gguf import write_gguf

CPU = torch.device("cpu")


class LoadOnlyComm:
    """A rank's place in the group; loading itself runs no collective."""

    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size


def param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def norm_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters()
               if n.endswith("norm.weight"))


@pytest.fixture(params=["safetensors", "gguf-f32", "gguf-q8_0"])
def checkpoint(request: pytest.FixtureRequest, tiny_llama: Path, tmp_path: Path) -> Path:
    if request.param == "safetensors":
        return tiny_llama
    qtype = gguf.GGMLQuantizationType.F32 if request.param == "gguf-f32" else \
        gguf.GGMLQuantizationType.Q8_0
    return write_gguf(tiny_llama, tmp_path / "m.gguf", qtype)


def test_each_rank_holds_half_and_the_halves_make_the_model(checkpoint: Path) -> None:
    full = load_model(checkpoint, torch.float32, CPU, quantization="none").model
    ranks = [load_model(checkpoint, torch.float32, CPU, quantization="none",
                        comm=LoadOnlyComm(r, 2)).model for r in range(2)]  # type: ignore[arg-type]
    total, norms = param_bytes(full), norm_bytes(full)
    for model in ranks:
        # Measured: everything but the norms is split in two (the tiny vocabulary, 320
        # rows, needs no padding at TP=2).
        assert param_bytes(model) - norms == (total - norms) // 2
        assert param_bytes(model) < 0.55 * total
    c = full.config
    r0, r1 = (dict(m.named_parameters()) for m in ranks)
    whole = dict(full.named_parameters())
    torch.testing.assert_close(torch.cat([r0["embed_tokens.weight"], r1["embed_tokens.weight"]]),
                               whole["embed_tokens.weight"], rtol=0, atol=0)
    for layer in range(c.num_layers):
        p = f"layers.{layer}."
        o = p + "self_attn.o_proj.weight"
        torch.testing.assert_close(torch.cat([r0[o], r1[o]], dim=1), whole[o], rtol=0, atol=0)
        down = p + "mlp.down_proj.weight"
        torch.testing.assert_close(torch.cat([r0[down], r1[down]], dim=1), whole[down],
                                   rtol=0, atol=0)
        qkv = p + "self_attn.qkv_proj.weight"
        q_half, kv_half = c.q_size // 2, c.kv_size // 2
        q = torch.cat([r0[qkv][:q_half], r1[qkv][:q_half]])
        torch.testing.assert_close(q, whole[qkv][: c.q_size], rtol=0, atol=0)
        k = torch.cat([r[qkv][q_half : q_half + kv_half] for r in (r0, r1)])
        torch.testing.assert_close(k, whole[qkv][c.q_size : c.q_size + c.kv_size], rtol=0, atol=0)
        gate_up = p + "mlp.gate_up_proj.weight"
        inter = c.intermediate_size
        up = torch.cat([r[gate_up][inter // 2 :] for r in (r0, r1)])
        torch.testing.assert_close(up, whole[gate_up][inter:], rtol=0, atol=0)
    if full.lm_head is not None:
        torch.testing.assert_close(torch.cat([r0["lm_head.weight"], r1["lm_head.weight"]]),
                                   whole["lm_head.weight"], rtol=0, atol=0)


# Heads of 128 dims and an MLP of 512: at TP=2 every rank's part falls on 128x128 blocks.
FP8_SHAPE = {
    "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 2, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
}


@pytest.mark.parametrize("granularity", ["block", "channel"])
def test_fp8_weights_and_scales_split_with_their_blocks(tmp_path: Path, granularity: str
                                                        ) -> None:
    from tests.conftest import make_tiny_llama
    from tests.engine.model.test_fp8_model import write_fp8_checkpoint

    src = make_tiny_llama(tmp_path / "float", FP8_SHAPE)
    write_fp8_checkpoint(src, tmp_path / "fp8", granularity, static=False)
    whole = dict(load_model(tmp_path / "fp8", torch.float32, CPU).model.named_parameters())
    r0, r1 = (dict(load_model(tmp_path / "fp8", torch.float32, CPU,
                              comm=LoadOnlyComm(r, 2)).model.named_parameters())  # type: ignore[arg-type]
              for r in range(2))

    def same(a: torch.Tensor, b: torch.Tensor) -> None:
        assert torch.equal(a.view(torch.uint8) if a.dtype == torch.float8_e4m3fn else a,
                           b.view(torch.uint8) if b.dtype == torch.float8_e4m3fn else b)

    up, down = "layers.0.mlp.gate_up_proj.", "layers.0.mlp.down_proj."
    # Column-parallel gate/up: rank r holds rows [r*256, (r+1)*256) of gate and of up.
    for kind in ("weight", "weight_scale"):
        rows = whole[up + kind].shape[0] // 4  # a quarter: half of gate, half of up
        want = torch.cat([whole[up + kind][:rows], whole[up + kind][2 * rows : 3 * rows]])
        same(r0[up + kind], want)
    # Row-parallel down_proj: its weight by columns; block scales by block columns, a
    # per-channel scale (one per output row) whole on every rank.
    half = whole[down + "weight"].shape[1] // 2
    same(torch.cat([r0[down + "weight"], r1[down + "weight"]], dim=1), whole[down + "weight"])
    same(r1[down + "weight"], whole[down + "weight"][:, half:])
    if granularity == "block":
        assert r0[down + "weight_scale"].shape == (2, 2)
        same(torch.cat([r0[down + "weight_scale"], r1[down + "weight_scale"]], dim=1),
             whole[down + "weight_scale"])
    else:
        same(r1[down + "weight_scale"], whole[down + "weight_scale"])
