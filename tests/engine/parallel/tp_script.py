"""A user's script with a TP=2 LLM, for tests that need a process of their own.

    python tp_script.py MODE MODEL
MODE: generate (print the greedy tokens as JSON, then exit without closing: atexit must
stop the worker); kill-worker (kill the worker after a few steps of a long generate; the
error is not caught); sleep (print the worker's pid and wait to be killed). Under torchrun
the same `generate` runs on every rank; only rank 0 gets past LLM(...).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from engine import LLM, SamplingParams

PROMPTS = [[5, 17, 99, 3, 250, 8], list(range(40, 80))]


def main() -> None:
    mode, model = sys.argv[1], sys.argv[2]
    llm = LLM(model, kv_cache_bytes=1 << 22, tensor_parallel_size=2)
    tp = llm.llm_engine.core.tp
    print(json.dumps({"workers": tp.pids if tp else []}), flush=True)
    if mode == "generate":
        out = llm.generate(PROMPTS, SamplingParams(max_tokens=32, temperature=0, ignore_eos=True))
        print(json.dumps({"tokens": [o.outputs[0].token_ids for o in out]}), flush=True)
    elif mode == "kill-worker":
        core = llm.llm_engine.core

        def kill_after_steps() -> None:
            while core.stats.steps < 3:
                time.sleep(0.001)
            os.kill(tp.pids[0], signal.SIGKILL)

        threading.Thread(target=kill_after_steps, daemon=True).start()
        llm.generate(PROMPTS, SamplingParams(max_tokens=200, temperature=0, ignore_eos=True))
        print("generate returned", flush=True)
    elif mode == "sleep":
        time.sleep(600)


if __name__ == "__main__":
    main()
