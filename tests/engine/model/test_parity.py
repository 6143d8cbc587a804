"""Our Llama against transformers' LlamaForCausalLM on the same random checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.model.loader import load_model
from engine.worker.model_runner import ModelRunner, SequenceChunk

PROMPT = [5, 17, 42, 99, 3, 250, 7, 7, 120, 64, 1, 300]


def our_logits(runner: ModelRunner, ids: list[int]) -> torch.Tensor:
    """Logits at every position of one sequence, from a single prefill."""
    input_ids, positions, meta = runner.prepare(
        [SequenceChunk(ids, 0, list(range(runner.num_blocks)))]
    )
    with torch.inference_mode():
        hidden = runner.model(input_ids, positions, runner.kv_caches, meta)
        return runner.model.compute_logits(hidden)


def make_runner(folder: Path) -> ModelRunner:
    loaded = load_model(folder, torch.float32, torch.device("cpu"))
    return ModelRunner(loaded.model, num_blocks=8, block_size=16, device=torch.device("cpu"))


def test_logits_match_transformers(tiny_llama: Path) -> None:
    from transformers import LlamaForCausalLM

    ref = LlamaForCausalLM.from_pretrained(tiny_llama, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        expected = ref(torch.tensor([PROMPT])).logits[0]
    ours = our_logits(make_runner(tiny_llama), PROMPT)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() < 1e-4


def test_greedy_tokens_match_transformers(tiny_llama: Path) -> None:
    """32 greedy tokens, decoded one at a time through our KV cache, equal HF's generate."""
    from transformers import LlamaForCausalLM

    ref = LlamaForCausalLM.from_pretrained(tiny_llama, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        hf = ref.generate(
            torch.tensor([PROMPT]), max_new_tokens=32, min_new_tokens=32, do_sample=False,
            pad_token_id=0,
        )[0, len(PROMPT):].tolist()
    runner = make_runner(tiny_llama)
    table = list(range(runner.num_blocks))
    ours: list[int] = []
    new, pos = PROMPT, 0
    for _ in range(32):
        logits = runner.execute([SequenceChunk(new, pos, table)])
        pos += len(new)
        ours.append(int(logits[0].argmax()))
        new = [ours[-1]]
    assert ours == hf


def test_batched_sequences_match_single(tiny_llama: Path) -> None:
    """Two sequences in one forward (prefill + decode mixed) give each one's own logits."""
    runner = make_runner(tiny_llama)
    a, b = PROMPT, PROMPT[::-1][:7]
    alone_a = our_logits(runner, a)[-1]
    alone_b = our_logits(runner, b)[-1]
    # a: prefill all but the last token into blocks 0-1, then decode it beside b's prefill.
    runner.execute([SequenceChunk(a[:-1], 0, [0, 1])])
    both = runner.execute(
        [SequenceChunk(a[-1:], len(a) - 1, [0, 1]), SequenceChunk(b, 0, [4, 5])]
    )
    assert torch.allclose(both[0], alone_a, atol=1e-4)
    assert torch.allclose(both[1], alone_b, atol=1e-4)


def test_sharded_and_half_precision_checkpoints(tiny_llama: Path, tmp_path: Path) -> None:
    """An index + several shards, stored in bfloat16, loads to the same logits as the
    single float32 file (up to bfloat16 rounding of the weights)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_llama, torch_dtype=torch.bfloat16)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="40KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (sharded / name).write_bytes((tiny_llama / name).read_bytes())
    assert (sharded / "model.safetensors.index.json").exists()
    assert len(list(sharded.glob("*.safetensors"))) > 2
    ours = our_logits(make_runner(sharded), PROMPT)
    with torch.no_grad():  # the reference: the same bfloat16 weights, computed in float32
        expected = model.float()(torch.tensor([PROMPT])).logits[0]
    assert (ours - expected).abs().max().item() < 1e-4


def test_verification_chunk_gives_every_positions_logits(tiny_llama: Path) -> None:
    """A speculative verification chunk (all_logits) gives, at each of its tokens, the
    logits one-token-at-a-time decoding gives there: whole (the CPU's way) and split into
    one decode row per token (CUDA's way), beside another sequence's decode."""
    drafts = [77, 78, 79, 80]
    expected = our_logits(make_runner(tiny_llama), PROMPT + drafts)[len(PROMPT) - 1 :]
    other = our_logits(make_runner(tiny_llama), PROMPT[:5])[-1]
    for split in (False, True):
        runner = make_runner(tiny_llama)
        runner.split_all_logits = split
        runner.execute([SequenceChunk(PROMPT[:-1], 0, [0, 1]),
                        SequenceChunk(PROMPT[:4], 0, [4])])
        logits = runner.execute([SequenceChunk(PROMPT[-1:] + drafts, len(PROMPT) - 1, [0, 1],
                                               all_logits=True),
                                 SequenceChunk(PROMPT[4:5], 4, [4])])
        assert logits.shape[0] == len(drafts) + 2
        assert torch.allclose(logits[:-1], expected, atol=1e-4), split
        assert torch.allclose(logits[-1], other, atol=1e-4), split
