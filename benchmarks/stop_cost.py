"""CPU time per output token spent on stop strings (the incremental detokenizer).

    python -m benchmarks.stop_cost                          # this checkout
    python -m benchmarks.stop_cost --checkout ../old        # and another, side by side
    python -m benchmarks.stop_cost --stops 1000 --length 4000 --tokens 40   # the issue's size

A byte-level tokenizer (one token per character) streams a periodic text through one
sequence's IncrementalDetokenizer with `--stops` stop strings of `--length` characters:
- `decoys`: none of them ever matches (random letters the text never holds);
- `held`: the same decoys, and last one stop that the text keeps matching a long prefix of,
  so up to `--length` - 1 characters are held back at every token (the worst case for a
  check that looks at the held text again for every stop).
The figures are CPU microseconds per token over the first and the last quarter of the
tokens (they must not grow with the output), and the set-up time of the detokenizer.
Each checkout runs in its own interpreter, so an older checkout measures its own code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import save

REPO = Path(__file__).resolve().parent.parent

_MEASURE = """
import json, random, sys, time
from engine.model.dummy import byte_tokenizer
from engine.tokenizer.detokenizer import IncrementalDetokenizer
num_stops, length, num_tokens = (int(a) for a in sys.argv[1:4])
tok = byte_tokenizer(512)
text = ("hello world " * (num_tokens // 12 + 2))[:num_tokens]
ids = tok.encode(text, add_special_tokens=False)
assert len(ids) == num_tokens, len(ids)
rng = random.Random(0)
decoys = ["".join(rng.choice("QXZJKV") for _ in range(length)) for _ in range(num_stops)]
held = ("hello world " * (length // 12 + 2))[: length - 1] + "#"
out = {}
for case, stops in (("decoys", decoys), ("held", decoys[:-1] + [held])):
    t0 = time.thread_time()
    detok = IncrementalDetokenizer(tok, ids[:1], stop=stops)
    setup = time.thread_time() - t0
    times = []
    for i in ids:
        t = time.thread_time()
        detok.step([i])
        times.append(time.thread_time() - t)
    assert detok.stop_reason is None
    q = max(1, num_tokens // 4)
    out[case] = {"setup_ms": setup * 1e3,
                 "first_quarter_us_per_token": sum(times[:q]) / q * 1e6,
                 "last_quarter_us_per_token": sum(times[-q:]) / q * 1e6,
                 "held_chars_at_end": len(detok.held_text)}
print(json.dumps(out))
"""


def measure(checkout: Path, stops: int, length: int, tokens: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(stops), str(length), str(tokens)],
                          cwd=checkout, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stops", type=int, default=16)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--tokens", type=int, default=2000)
    p.add_argument("--checkout", type=Path, action="append", default=[],
                   help="another checkout to measure beside this one")
    args = p.parse_args()
    results = {}
    for checkout in [*args.checkout, REPO]:
        results[str(checkout)] = measure(checkout, args.stops, args.length, args.tokens)
        for case, r in results[str(checkout)].items():
            print(f"{checkout}  {case:7s} setup {r['setup_ms']:8.2f} ms   us/token first "
                  f"quarter {r['first_quarter_us_per_token']:10.1f}   last quarter "
                  f"{r['last_quarter_us_per_token']:10.1f}   held {r['held_chars_at_end']}")
    path = save("stop_cost", {"stops": args.stops, "length": args.length,
                              "tokens": args.tokens, "results": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
