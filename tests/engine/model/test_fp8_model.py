"""FP8 models: quantized at load time, or loaded from FP8 checkpoints as they ship.

The checkpoints are written here from a float one, with the scales computed in the test
(not by the engine), in the layouts real FP8 checkpoints use: a per-tensor or per-channel
`weight_scale` (optionally a static `input_scale`), or 128x128 `weight_scale_inv` blocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.model.fp8 import Fp8Linear, Fp8Spec
from engine.model.loader import load_model
from engine.worker.model_runner import ModelRunner
from tests.conftest import make_tiny_llama
from tests.engine.model.test_parity import PROMPT, our_logits

FP8 = torch.float8_e4m3fn
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BLOCK_SHAPE = {  # every projection a multiple of 128 rows and columns, for 128x128 blocks
    "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 2, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
}


def logits_of(folder: Path, **kwargs: object) -> tuple[torch.Tensor, torch.nn.Module]:
    loaded = load_model(folder, torch.float32, torch.device("cpu"), **kwargs)
    runner = ModelRunner(loaded.model, num_blocks=8, block_size=16, device=torch.device("cpu"))
    return our_logits(runner, PROMPT), loaded.model


def close_enough(fp8: torch.Tensor, ref: torch.Tensor) -> None:
    """FP8 keeps 3 mantissa bits (~2.5% error per weight matrix), which these small random
    models amplify to ~12% in the logits from the weights alone (measured by dequantizing
    them into a float model), so near-tied argmaxes may flip: the check is that logits agree
    in direction. A wrong scale or row order gives unrelated logits (cosine near 0)."""
    cos = torch.nn.functional.cosine_similarity(fp8, ref, dim=-1)
    assert cos.mean().item() > 0.97
    assert cos.min().item() > 0.85


def quantize(w: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, dequantization scale) computed here, independently of the engine."""
    w = w.float()
    if granularity == "tensor":
        scale = w.abs().max() / 448
    elif granularity == "channel":
        scale = w.abs().amax(dim=1, keepdim=True) / 448
    else:  # 128x128 blocks
        n, k = w.shape
        blocks = w.reshape(n // 128, 128, k // 128, 128).abs().amax(dim=(1, 3)) / 448
        q = (w / blocks.repeat_interleave(128, 0).repeat_interleave(128, 1)).to(FP8)
        return q, blocks
    return (w / scale).to(FP8), scale


def write_fp8_checkpoint(src: Path, dst: Path, granularity: str, static: bool) -> dict:
    """Copy src with its projections in FP8; returns the written tensors."""
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(src / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        module = name.rsplit(".", 2)[-2] if name.endswith(".weight") else ""
        if module not in PROJECTIONS:
            out[name] = t
            continue
        q, scale = quantize(t, granularity)
        base = name[: -len(".weight")]
        out[name] = q
        out[base + (".weight_scale_inv" if granularity == "block" else ".weight_scale")] = scale
        if static:  # a calibration scale; any positive value works for the test
            out[base + ".input_scale"] = torch.tensor(0.05 + 0.01 * (len(out) % 3))
    save_file(out, str(dst / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "fp8", "activation_scheme": "static" if static else "dynamic",
        **({"weight_block_size": [128, 128]} if granularity == "block" else {}),
    }
    (dst / "config.json").write_text(json.dumps(config))
    return out


def test_load_time_quantization(tiny_llama: Path) -> None:
    ref, _ = logits_of(tiny_llama)
    got, model = logits_of(tiny_llama, quantization="fp8")
    linears = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    assert len(linears) == 4 * model.config.num_layers  # qkv, o, gate_up, down per layer
    gate_up = model.layers[0].mlp.gate_up_proj  # ragged blocks: 2 x 128 over [2*inter, hidden]
    assert gate_up.weight_scale.shape == (-(-gate_up.out_features // 128), 1)
    assert model.embed_tokens.weight.dtype == torch.float32
    assert model.lm_head is None or model.lm_head.weight.dtype == torch.float32
    close_enough(got, ref)


@pytest.mark.parametrize(("granularity", "static"), [
    ("tensor", False), ("channel", False), ("tensor", True),
])
def test_fp8_checkpoint_loads_as_shipped(
    tiny_llama: Path, tmp_path: Path, granularity: str, static: bool
) -> None:
    written = write_fp8_checkpoint(tiny_llama, tmp_path / "fp8", granularity, static)
    ref, _ = logits_of(tiny_llama)
    got, model = logits_of(tmp_path / "fp8")
    attn = model.layers[0].self_attn.qkv_proj
    q_rows = model.config.q_size
    # Weights arrive bit for bit; each fused part keeps its own scale on its own rows.
    expected_q = written["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(attn.weight[:q_rows].view(torch.uint8), expected_q.view(torch.uint8))
    k_scale = written["model.layers.0.self_attn.k_proj.weight_scale"].reshape(-1)
    k_rows = attn.weight_scale[q_rows : q_rows + model.config.kv_size]
    assert torch.allclose(k_rows, k_scale.expand_as(k_rows))
    if static:
        parts = [written[f"model.layers.0.self_attn.{p}_proj.input_scale"] for p in "qkv"]
        assert attn.input_scale.item() == pytest.approx(max(p.item() for p in parts))
        assert torch.isfinite(got).all()
    else:
        close_enough(got, ref)


def test_block_scaled_checkpoint(tmp_path: Path) -> None:
    src = make_tiny_llama(tmp_path / "float", BLOCK_SHAPE)
    write_fp8_checkpoint(src, tmp_path / "fp8", "block", static=False)
    ref, _ = logits_of(src)
    got, model = logits_of(tmp_path / "fp8")
    assert model.layers[0].mlp.gate_up_proj.weight_scale.shape == (4, 1)
    close_enough(got, ref)


def test_missing_scale_is_a_clear_error(tiny_llama: Path, tmp_path: Path) -> None:
    written = write_fp8_checkpoint(tiny_llama, tmp_path / "fp8", "tensor", static=False)
    del written["model.layers.1.mlp.down_proj.weight_scale"]
    save_file(written, str(tmp_path / "fp8" / "model.safetensors"))
    with pytest.raises(ValueError, match="down_proj.weight_scale"):
        load_model(tmp_path / "fp8", torch.float32, torch.device("cpu"))


@pytest.mark.parametrize(("quant", "expected"), [
    ({"quant_method": "fp8", "activation_scheme": "dynamic"}, Fp8Spec(None, False)),
    ({"quant_method": "fp8", "activation_scheme": "static"}, Fp8Spec(None, True)),
    ({"quant_method": "fp8", "weight_block_size": [128, 128]}, Fp8Spec(128, False)),
    ({"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
        "input_activations": {"num_bits": 8, "type": "float", "dynamic": True}}}},
     Fp8Spec(None, False)),
    ({"quant_method": "compressed-tensors", "config_groups": {"group_0": {
        "weights": {"num_bits": 8, "type": "float", "strategy": "tensor"},
        "input_activations": {"num_bits": 8, "type": "float", "dynamic": False}}}},
     Fp8Spec(None, True)),
])
def test_fp8_layouts_read_from_config(quant: dict, expected: Fp8Spec) -> None:
    assert Fp8Spec.from_hf_config({"quantization_config": quant}) == expected


@pytest.mark.parametrize("quant", [
    {"quant_method": "gptq"},
    {"quant_method": "fp8", "weight_block_size": [128, 64]},
    {"quant_method": "compressed-tensors", "config_groups": {"g": {
        "weights": {"num_bits": 4, "type": "int"}}}},
])
def test_unsupported_quantization_is_refused(quant: dict) -> None:
    with pytest.raises(ValueError):
        Fp8Spec.from_hf_config({"quantization_config": quant})


def test_unquantized_weight_in_an_fp8_checkpoint_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    written = write_fp8_checkpoint(tiny_llama, tmp_path / "fp8", "tensor", static=False)
    name = "model.layers.0.mlp.up_proj.weight"
    written[name] = written[name].float()
    save_file(written, str(tmp_path / "fp8" / "model.safetensors"))
    with pytest.raises(ValueError, match="up_proj.weight.*float8_e4m3fn"):
        load_model(tmp_path / "fp8", torch.float32, torch.device("cpu"))


def test_scale_of_the_wrong_size_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    written = write_fp8_checkpoint(tiny_llama, tmp_path / "fp8", "channel", static=False)
    name = "model.layers.0.self_attn.o_proj.weight_scale"
    written[name] = written[name][:-1]
    save_file(written, str(tmp_path / "fp8" / "model.safetensors"))
    with pytest.raises(ValueError, match="per-channel"):
        load_model(tmp_path / "fp8", torch.float32, torch.device("cpu"))


def test_block_scales_must_align_with_fused_projections(tmp_path: Path) -> None:
    """q/k/v of 64 rows each cannot share 128-row scale blocks of one fused matrix."""
    shape = {**BLOCK_SHAPE, "num_attention_heads": 4, "num_key_value_heads": 1}  # k, v: 32 rows
    src = make_tiny_llama(tmp_path / "float", shape)
    tensors = load_file(str(src / "model.safetensors"))
    out = {}
    for name, t in tensors.items():
        out[name] = t
        if name.endswith("_proj.weight"):
            n, k = t.shape
            out[name] = t.to(FP8)
            out[name[: -len("weight")] + "weight_scale_inv"] = torch.ones(-(-n // 128), -(-k // 128))
    (tmp_path / "fp8").mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (tmp_path / "fp8" / f.name).write_bytes(f.read_bytes())
    save_file(out, str(tmp_path / "fp8" / "model.safetensors"))
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    (tmp_path / "fp8" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not align"):
        load_model(tmp_path / "fp8", torch.float32, torch.device("cpu"))
