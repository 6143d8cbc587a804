"""The processes of tensor parallelism: a worker that dies fails the engine with a clear
error and a non-zero exit (no hang); no worker outlives its engine, however the engine's
process ends; a torchrun launch of the offline API gives the TP=1 tokens; TP=4 (KV heads
replicated) and an FP8 checkpoint give TP=1's tokens. Every engine here is closed by its
test (one tensor-parallel engine per process at a time)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import LLM, SamplingParams
from tests.conftest import REPO, make_tiny_llama
from tests.processes import alive, child_pids, wait_gone

SCRIPT = Path(__file__).with_name("tp_script.py")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_llama(tmp_path_factory.mktemp("tp-proc"), "llama31"))


def run_script(mode: str, model: str) -> tuple[subprocess.CompletedProcess, list[int]]:
    done = subprocess.run([sys.executable, str(SCRIPT), mode, model], check=False, env=ENV, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    return done, lines[0]["workers"] if lines else []


def reference_tokens(model: str) -> list[list[int]]:
    from tests.engine.parallel.tp_script import PROMPTS

    llm = LLM(model, kv_cache_bytes=1 << 22)
    out = llm.generate(PROMPTS, SamplingParams(max_tokens=32, temperature=0, ignore_eos=True))
    return [o.outputs[0].token_ids for o in out]


def test_dead_worker_fails_generate_and_the_process_exits_nonzero(model: str) -> None:
    done, workers = run_script("kill-worker", model)
    assert done.returncode != 0
    assert "generate returned" not in done.stdout
    assert (f"WorkerFailed: tensor-parallel worker rank 1 (pid {workers[0]}) exited with "
            "code -9; the engine cannot continue") in done.stderr, done.stderr[-2000:]
    assert wait_gone(workers)


def test_worker_exits_with_an_engine_that_is_never_closed(model: str) -> None:
    done, workers = run_script("generate", model)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(workers) == 1 and wait_gone(workers)


def test_worker_exits_when_its_engine_process_is_killed(model: str) -> None:
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "sleep", model], env=ENV, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        workers = json.loads(proc.stdout.readline())["workers"]
        assert len(workers) == 1 and alive(workers[0])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert wait_gone(workers)
    finally:
        proc.kill()
        proc.wait()


def test_close_stops_the_worker_with_exit_code_zero(model: str) -> None:
    llm = LLM(model, kv_cache_bytes=1 << 22, tensor_parallel_size=2)
    tp = llm.llm_engine.core.tp
    assert tp is not None
    (proc,) = tp.procs
    llm.close()
    assert proc.returncode == 0
    llm.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="shut down"):
        llm.generate([[1, 2, 3]], SamplingParams(max_tokens=2))


def test_torchrun_launch_gives_the_tp1_tokens(model: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
         "2", "--master-addr", "127.0.0.1", "--master-port", str(port), str(SCRIPT),
         "generate", model],
        check=False, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [json.loads(x) for x in done.stdout.splitlines() if x.startswith('{"tokens"')]
    assert len(printed) == 1  # rank 0 only: rank 1 served as the worker inside LLM(...)
    assert printed[0]["tokens"] == reference_tokens(model)


def test_four_ranks_replicate_the_two_kv_heads_and_match_tp1(model: str) -> None:
    """llama31 has 8 query heads and 2 KV heads: at TP=4 each KV head lives on two ranks."""
    from tests.engine.parallel.tp_script import PROMPTS

    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    want = [o.outputs[0].token_ids for o in LLM(model, kv_cache_bytes=1 << 22).generate(
        PROMPTS, params)]
    with LLM(model, kv_cache_bytes=1 << 22, tensor_parallel_size=4) as llm:
        assert llm.llm_engine.core.runner.kv_caches[0][0].shape[2] == 1  # one KV head per rank
        got = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)]
    assert got == want


def test_heads_that_do_not_split_are_refused_before_any_worker_starts(model: str) -> None:
    before = set(child_pids())
    with pytest.raises(ValueError, match="8 attention heads do not divide evenly over "
                                         "tensor_parallel_size 3"):
        LLM(model, tensor_parallel_size=3)
    assert set(child_pids()) == before


def test_fp8_block_scaled_checkpoint_under_tp2_matches_tp1(tmp_path: Path) -> None:
    """Each rank's FP8 GEMM takes its shard with its 128x128 block scales; activation groups
    of 128 columns fall on the same boundaries, so only the summation order differs."""
    from tests.engine.model.test_fp8_model import write_fp8_checkpoint
    from tests.engine.parallel.test_sharded_loading import FP8_SHAPE
    from tests.engine.parallel.test_tp_engine import every_logit
    from tests.engine.parallel.tp_script import PROMPTS

    make_tiny_llama(tmp_path / "float", FP8_SHAPE)
    write_fp8_checkpoint(tmp_path / "float", tmp_path / "fp8", "block", static=False)
    ref = LLM(str(tmp_path / "fp8"), kv_cache_bytes=1 << 22)
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    with LLM(str(tmp_path / "fp8"), kv_cache_bytes=1 << 22, tensor_parallel_size=2) as tp:
        assert tp.llm_engine.core.weights_kind == "fp8"
        torch.testing.assert_close(every_logit(tp), every_logit(ref), rtol=0, atol=1e-4)
        got = [o.outputs[0].token_ids for o in tp.generate(PROMPTS, params)]
    assert got == [o.outputs[0].token_ids for o in ref.generate(PROMPTS, params)]


def test_an_engine_dropped_unclosed_stops_its_worker(model: str) -> None:
    import gc

    llm = LLM(model, kv_cache_bytes=1 << 22, tensor_parallel_size=2)
    tp = llm.llm_engine.core.tp
    assert tp is not None
    (proc,) = tp.procs
    del llm, tp
    gc.collect()
    assert proc.returncode == 0  # stopped in order, and the process may start another
