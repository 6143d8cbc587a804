"""Sentence embeddings per second on the CPU: our BERT encoder against sentence-transformers
on the same sentences, in the same run, at batch sizes 1, 32 and 256.

    python -m benchmarks.embeddings --batch-sizes 1 32 256 --threads 1

Both sides include tokenization, padding, pooling and normalisation. A batch of b is one
call with b sentences: sentence-transformers gets batch_size=b (it sorts by length and pads
the b to their longest); ours sorts too and runs them in forwards of at most
max_batch_tokens padded tokens (its default), which wastes less work on padding. The
sentences are seeded word sequences of 8-64 words. --threads sets torch's threads for both
(the server runs the encoder on one). The JSON also records the lowest cosine between the
two sides' vectors, as a check that both computed the same thing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.common import save
from engine import SentenceEncoder

WORDS = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at",
         "from", "city", "river", "music", "science", "data", "model", "vector", "search",
         "paris", "france", "mountain", "ocean", "history", "language", "computer", "network",
         "energy", "market", "health", "garden", "summer", "winter", "coffee", "train",
         "book", "story", "light", "water", "question", "answer", "quickly", "slowly",
         "because", "although", "however", "therefore"]


def sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 64))).capitalize() + "."
            for _ in range(count)]


def rate(fn: Callable[[list[str]], torch.Tensor], texts: list[str], batch: int,
         repeats: int) -> tuple[float, torch.Tensor]:
    """Median embeddings/s over `repeats` passes over `texts` in calls of `batch`."""
    fn(texts[:batch])  # warm-up
    times, out = [], torch.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        out = torch.cat([fn(texts[i : i + batch]) for i in range(0, len(texts), batch)])
        times.append(time.perf_counter() - start)
    return len(texts) / statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="all-minilm-l6-v2")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 256])
    p.add_argument("--sentences", type=int, default=256,
                   help="sentences per pass (batch 1 uses the first --batch1-sentences)")
    p.add_argument("--batch1-sentences", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    texts = sentences(max(args.sentences, args.batch1_sentences), args.seed)
    ours_model = SentenceEncoder(args.model)
    theirs = SentenceTransformer(str(ours_model.path), device="cpu")
    theirs.max_seq_length = ours_model.max_len
    runs = {}
    for b in args.batch_sizes:
        pool = texts[: args.batch1_sentences] if b == 1 else texts[: args.sentences]

        def ours(chunk: list[str]) -> torch.Tensor:
            return ours_model.embed_token_ids(ours_model.tokenize(chunk, truncate=True))

        def st(chunk: list[str], b: int = b) -> torch.Tensor:
            return theirs.encode(chunk, batch_size=b, convert_to_tensor=True,
                                 normalize_embeddings=False).float()

        ours_rate, ours_out = rate(ours, pool, b, args.repeats)
        st_rate, st_out = rate(st, pool, b, args.repeats)
        cos = torch.nn.functional.cosine_similarity(ours_out, st_out, dim=-1).min().item()
        runs[str(b)] = {"sentences": len(pool), "ours_per_s": round(ours_rate, 1),
                        "sentence_transformers_per_s": round(st_rate, 1),
                        "ratio": round(ours_rate / st_rate, 3), "min_cosine": round(cos, 6)}
        print(f"batch {b}: ours {ours_rate:.1f}/s, sentence-transformers {st_rate:.1f}/s, "
              f"ratio {ours_rate / st_rate:.2f}, min cosine {cos:.6f}")
    record = {"benchmark": "embeddings", "model": args.model, "threads": args.threads,
              "repeats": args.repeats, "seed": args.seed,
              "mean_tokens": round(statistics.mean(
                  len(ids) for ids in ours_model.tokenize(texts, truncate=True)), 1),
              "runs": runs}
    print(f"saved {save('embeddings', record)}")


if __name__ == "__main__":
    main()
