"""GGUF files written here with the `gguf` writer load to the weights they came from."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.config import ModelConfig
from engine.model.layers import rope_inv_freq
from engine.model.loader import load_model

Q = gguf.GGMLQuantizationType
LAYER_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf: str) -> str:
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}
    if hf in fixed:
        return fixed[hf]
    _, _, layer, *module, kind = hf.split(".")
    return f"blk.{layer}.{LAYER_NAMES['.'.join(module)]}.{kind}"


def permute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter layout for Q/K rows (HF rotate-half -> interleaved pairs)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape
    )


def add_tokenizer(writer: gguf.GGUFWriter, folder: Path) -> None:
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    special = {t["id"] for t in spec["added_tokens"]}
    tokens = sorted(vocab, key=vocab.get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])
    writer.add_token_merges(merges)
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_add_bos_token(False)


def write_gguf(folder: Path, dest: Path, matrix_type: Q, rope_freqs: bool = False) -> Path:
    """Convert a tiny HF checkpoint to GGUF: 2-D weights in `matrix_type`, norms in F32."""
    cfg = ModelConfig.from_hf_config(json.loads((folder / "config.json").read_text()))
    writer = gguf.GGUFWriter(str(dest), "llama")
    writer.add_block_count(cfg.num_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_heads)
    writer.add_head_count_kv(cfg.num_kv_heads)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    add_tokenizer(writer, folder)
    if rope_freqs:  # llama.cpp ships Llama 3.1 scaling as per-frequency divisors
        plain = rope_inv_freq(cfg.head_dim, cfg.rope_theta, None)
        scaled = rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        writer.add_tensor("rope_freqs.weight", (plain / scaled).numpy().astype(np.float32))
    for name, tensor in load_file(folder / "model.safetensors").items():
        w = tensor.float().numpy()
        if "q_proj" in name:
            w = permute_rows(w, cfg.num_heads)
        elif "k_proj" in name:
            w = permute_rows(w, cfg.num_kv_heads)
        qtype = matrix_type if w.ndim == 2 else Q.F32
        data = w if qtype == Q.F32 else gguf.quants.quantize(w, qtype)
        writer.add_tensor(gguf_name(name), data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


def state(folder_or_file: Path) -> dict[str, torch.Tensor]:
    loaded = load_model(folder_or_file, torch.float32, torch.device("cpu"), quantization="none")
    return {k: v.clone() for k, v in loaded.model.state_dict().items()}


@pytest.mark.parametrize("qtype", [Q.F32, Q.Q8_0, Q.Q4_1])
def test_gguf_weights_match_safetensors(tiny_llama: Path, tmp_path: Path, qtype: Q) -> None:
    expected = state(tiny_llama)
    got = state(write_gguf(tiny_llama, tmp_path / "m.gguf", qtype))
    assert expected.keys() == got.keys()
    for name, ref in expected.items():
        err = (got[name] - ref).abs().max().item()
        # One quantization step of the format bounds the error (half a step, doubled for slack).
        step = {Q.F32: 1e-7, Q.Q8_0: ref.abs().max().item() / 127,
                Q.Q4_1: (ref.max() - ref.min()).item() / 15}[qtype]
        assert err <= step, f"{name}: error {err} > {step}"


def test_gguf_f32_logits_match_transformers(tiny_llama: Path, tmp_path: Path) -> None:
    """Through rope_freqs and tied embeddings, an F32 GGUF gives transformers' logits."""
    from transformers import LlamaForCausalLM

    from engine.worker.model_runner import ModelRunner
    from tests.engine.model.test_parity import PROMPT, our_logits

    path = write_gguf(tiny_llama, tmp_path / "m.gguf", Q.F32, rope_freqs=True)
    loaded = load_model(path, torch.float32, torch.device("cpu"))
    runner = ModelRunner(loaded.model, 8, 16, torch.device("cpu"))
    ref = LlamaForCausalLM.from_pretrained(tiny_llama, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        expected = ref(torch.tensor([PROMPT])).logits[0]
    assert (our_logits(runner, PROMPT) - expected).abs().max().item() < 1e-4
