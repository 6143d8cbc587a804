"""Cost of grammar masks (guided decoding): decode tokens/s at batch 1 and 32 with and without
a grammar, plus the sampler alone (mask fill + apply) per step.

    python -m benchmarks.guided --model smollm2-135m-instruct --decode-len 64 --batches 1 32

The grammar is a JSON array of at least 10,000 digits, so a guided run never ends before
max_tokens: both runs produce exactly batch x decode-len tokens and their tokens/s compare.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import ms_stats, save
from engine import LLM, GuidedDecoding, SamplingParams
from engine.guided.matcher import GrammarState
from engine.worker.sampler import Sampler, SamplingMetadata

LONG_ARRAY = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9},
              "minItems": 10_000}


def decode_tps(llm: LLM, batch: int, decode_len: int, guided: bool, repeats: int) -> float:
    kwargs = ({"guided": GuidedDecoding(json_schema=LONG_ARRAY)} if guided
              else {"ignore_eos": True})
    params = SamplingParams(temperature=0, max_tokens=decode_len, **kwargs)
    prompts = [f"Numbers, set {i}:" for i in range(batch)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        outs = llm.generate(prompts, params)
        times.append(time.perf_counter() - start)
        got = sum(len(o.outputs[0].token_ids) for o in outs)
        if got != batch * decode_len:
            raise RuntimeError(f"expected {batch * decode_len} tokens, got {got}")
    return batch * decode_len / statistics.median(times)


def sampler_ms(llm: LLM, batch: int, guided: bool, steps: int) -> dict[str, float]:
    """One sampler call over random logits, greedy; with a fresh grammar state per row."""
    compiled = llm.llm_engine.core.grammars.compile(GuidedDecoding(json_schema=LONG_ARRAY))
    vocab = llm.model_config.vocab_size
    sampler = Sampler(0)
    params = [SamplingParams(temperature=0)] * batch
    times = []
    for _ in range(steps):
        grammars = [GrammarState(compiled) for _ in range(batch)] if guided else None
        meta = SamplingMetadata(params, [[1]] * batch, [[]] * batch, [None] * batch,
                                llm.eos_token_ids, grammars)
        logits = torch.randn(batch, vocab)
        start = time.perf_counter()
        sampler(logits, meta)
        times.append(time.perf_counter() - start)
    return ms_stats(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decode-len", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sampler-steps", type=int, default=50)
    args = parser.parse_args()

    llm = LLM(args.model, dtype=args.dtype, device=args.device, enable_prefix_caching=False,
              max_num_seqs=max(args.batches))
    decode_tps(llm, 1, 4, True, 1)  # warm-up, and the grammar compiled once
    rows = []
    for batch in args.batches:
        plain = decode_tps(llm, batch, args.decode_len, False, args.repeats)
        masked = decode_tps(llm, batch, args.decode_len, True, args.repeats)
        row = {"batch": batch, "tokens_per_s_plain": round(plain, 1),
               "tokens_per_s_guided": round(masked, 1),
               "guided_over_plain": round(masked / plain, 3),
               "sampler_ms_plain": sampler_ms(llm, batch, False, args.sampler_steps),
               "sampler_ms_guided": sampler_ms(llm, batch, True, args.sampler_steps)}
        rows.append(row)
        print(f"batch {batch:>3}: {plain:8.1f} tok/s plain, {masked:8.1f} tok/s guided "
              f"(x{row['guided_over_plain']}); sampler mean "
              f"{row['sampler_ms_plain'].get('mean')} ms plain, "
              f"{row['sampler_ms_guided'].get('mean')} ms guided")
    record = {"benchmark": "guided", "model": args.model, "dtype": args.dtype,
              "decode_len": args.decode_len, "repeats": args.repeats,
              "threads": torch.get_num_threads(), "results": rows}
    print(f"saved {save('guided', record)}")


if __name__ == "__main__":
    main()
