"""Rank 0's side of tensor parallelism: start the group (spawned workers on this machine,
or the ranks torchrun started), send every step to the workers, notice when one dies, and
stop them all at shutdown.

Spawned workers are `python -m engine.parallel.worker` processes (not multiprocessing's
spawn, which would re-run the user's script); they exit when rank 0's process goes away.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from engine.config import EngineConfig
from engine.parallel.comm import TPComm
from engine.parallel.layout import tp_layout

if TYPE_CHECKING:
    from engine.embedding.pooling import PoolingConfig
    from engine.model.llama import LlamaForCausalLM
    from engine.worker.model_runner import ModelRunner, RunnerOutput, SequenceChunk

logger = logging.getLogger(__name__)

TIMEOUT_ENV = "ENGINE_TP_TIMEOUT_S"  # a collective's limit (a hung peer); default 600 s
# NCCL does not notice a dead peer (gloo does, from its closed sockets): a step blocked in an
# NCCL collective would wait out the timeout. After a worker's death the process gets this
# long to answer and close what it can, then exits with EXIT_CODE.
NCCL_FAILSAFE_S = 30.0
EXIT_CODE = 3
CONTROL_TIMEOUT = timedelta(days=7)  # workers wait this long for rank 0's next message
_REPO = Path(__file__).resolve().parent.parent.parent


class WorkerFailed(RuntimeError):
    """A tensor-parallel worker died or its connection broke: the engine cannot go on."""


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when torchrun (or the same variables) started us."""
    keys = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    if not all(k in os.environ for k in keys):
        return None
    rank = int(os.environ["RANK"])
    return rank, int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", rank))


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """Rank r uses GPU r of its machine; CPU ranks share the CPU."""
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"tensor-parallel rank {local_rank} needs GPU {local_rank}, but this "
                         f"machine has {torch.cuda.device_count()}")
    dev = torch.device("cuda", local_rank)
    torch.cuda.set_device(dev)
    return dev


def init_comm(rank: int, size: int, init_method: str, device: torch.device) -> TPComm:
    """Join the group: NCCL for the model's tensors on CUDA, gloo on the CPU; gloo for the
    control messages either way."""
    if dist.is_initialized():
        raise ValueError("torch.distributed is already initialized in this process: another "
                         "tensor-parallel engine is running (close it with LLM.close() before "
                         "starting another), or the caller set up its own process group")
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=size,
                            timeout=timeout)
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    return TPComm(rank, size, dist.group.WORLD, control)


def check_shape(config: EngineConfig) -> None:
    """Refuse a model that cannot be split before any worker starts (heads, KV heads, MLP)."""
    from engine.model.dummy import dummy_source  # reads config.json or GGUF metadata only

    shape, _ = dummy_source(config.model)
    tp_layout(shape, 0, config.tensor_parallel_size)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_worker(config: EngineConfig, rank: int, init_method: str) -> subprocess.Popen:
    env = dict(os.environ)
    # The worker imports this checkout's engine whatever the caller's working directory.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "engine.parallel.worker", "--rank", str(rank),
           "--init", init_method, "--parent", str(os.getpid()),
           "--config", json.dumps(asdict(config))]
    # A session of its own: a Ctrl-C at the terminal reaches rank 0 only, which shuts the
    # workers down in order (they would otherwise die first and fail the engine).
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)


def start_tensor_parallel(config: EngineConfig, device: torch.device) -> TPDriver:
    """Rank 0's driver. Under torchrun, a rank other than 0 runs the worker loop here and
    then exits the process (SystemExit) once rank 0 has shut down."""
    size = config.tensor_parallel_size
    check_shape(config)
    env = torchrun_env()
    if env is not None:
        rank, world, local_rank = env
        if world != size:
            raise ValueError(f"tensor_parallel_size is {size} but torchrun started {world} "
                             "processes (WORLD_SIZE): they must match")
        device = rank_device(device, local_rank)
        comm = init_comm(rank, size, "env://", device)
        if rank != 0:
            from engine.parallel.worker import serve_worker

            raise SystemExit(serve_worker(config, device, comm))
        return TPDriver(comm, device, [])
    if device.type == "cuda" and torch.cuda.device_count() < size:
        raise ValueError(f"tensor_parallel_size {size} needs {size} GPUs; this machine has "
                         f"{torch.cuda.device_count()}")
    init_method = f"tcp://127.0.0.1:{free_port()}"
    procs = [spawn_worker(config, r, init_method) for r in range(1, size)]
    try:
        comm = _join_watching(procs, size, init_method, rank_device(device, 0))
    except BaseException:
        _stop(procs, 0.0)
        raise
    return TPDriver(comm, rank_device(device, 0), procs)


def _join_watching(procs: Sequence[subprocess.Popen], size: int, init_method: str,
                   device: torch.device) -> TPComm:
    """init_comm, failing at once (not at the timeout) when a worker exits meanwhile."""
    box: dict[str, Any] = {}

    def join() -> None:
        try:
            box["comm"] = init_comm(0, size, init_method, device)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=join, name="tp-init", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
        for rank, proc in enumerate(procs, start=1):
            if proc.poll() is not None and thread.is_alive():
                raise WorkerFailed(f"tensor-parallel worker rank {rank} (pid {proc.pid}) "
                                   f"exited with code {proc.returncode} while starting")
    if "error" in box:
        raise box["error"]
    return box["comm"]


def _stop(procs: Sequence[subprocess.Popen], grace: float) -> None:
    """Wait up to `grace` seconds for the workers to exit, then kill what is left."""
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class TPDriver:
    """Rank 0's handle on the group: every step goes to the workers first, then runs here.

    A worker's death is noticed by the next collective (its sockets close: at once) or, for
    spawned workers, by a watcher thread while the engine is idle; either way the driver is
    failed for good and `on_failure` callbacks run (the server exits on it).
    """

    def __init__(self, comm: TPComm, device: torch.device, procs: list[subprocess.Popen]
                 ) -> None:
        self.comm = comm
        self.device = device
        self.procs = procs
        self.failed: WorkerFailed | None = None
        self.closed = False
        self._callbacks: list[Callable[[WorkerFailed], None]] = []
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="tp-watch", daemon=True)
        if procs:
            self._watcher.start()
        # No orphans even when the caller never closes the engine.
        atexit.register(_close_ref, weakref.ref(self))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def on_failure(self, callback: Callable[[WorkerFailed], None]) -> None:
        """Called once, from whichever thread notices, when the group breaks."""
        self._callbacks.append(callback)
        if self.failed is not None:
            callback(self.failed)

    def run_step(self, runner: ModelRunner, copies: list[tuple[int, int]],
                 chunks: list[SequenceChunk]) -> RunnerOutput:
        """The step on every rank: the workers get its inputs, then this rank runs its own
        shard (their collectives meet inside the forward)."""
        self._check()
        try:
            self.comm.send(("step", copies, chunks))
            runner.copy_blocks(copies)
            return runner.execute_full(chunks)
        except Exception as e:  # the ranks are out of step now: the group cannot go on
            raise self._fail(f"a tensor-parallel step failed: {e}") from e

    def run_embed(self, model: LlamaForCausalLM, config: EngineConfig, ids: list[list[int]],
                  pooling: PoolingConfig) -> torch.Tensor:
        from engine.embedding.decoder_pooling import embed_with_decoder

        self._check()
        try:
            self.comm.send(("embed", ids, pooling))
            return embed_with_decoder(model, self.device, config.block_size,
                                      config.max_num_batched_tokens, ids, pooling)
        except Exception as e:  # the ranks are out of step now: the group cannot go on
            raise self._fail(f"a tensor-parallel step failed: {e}") from e

    def close(self) -> None:
        """Tell the workers to stop, wait for them (killing any that linger), leave the
        group. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        if self.failed is None:
            try:
                self.comm.send(("stop",))
            except Exception as e:  # noqa: BLE001 - a worker already gone; _stop reaps the rest
                logger.warning("could not tell the workers to stop: %s", e)
        self._end(grace=10.0)

    def abort(self) -> None:
        """Rank 0 failed before the workers finished starting: kill them (they may be inside
        a start-up collective, where a "stop" message would not be read)."""
        with self._lock:
            self.closed = True
        self._end(grace=0.0)

    def _end(self, grace: float) -> None:
        """Stop the workers (killed after `grace` seconds) and leave the process group."""
        _stop(self.procs, grace)
        try:
            dist.destroy_process_group()
        except (RuntimeError, ValueError):
            pass

    def _check(self) -> None:
        if self.failed is not None:
            raise self.failed
        if self.closed:
            raise WorkerFailed("the engine's tensor-parallel workers were shut down")

    def _fail(self, cause: str) -> WorkerFailed:
        """Fail the driver for good: name the dead worker when one is known."""
        deadline = time.monotonic() + (1.0 if self.procs else 0.0)
        while True:  # a dead worker's sockets close just before it can be reaped
            dead = [(r, p) for r, p in enumerate(self.procs, start=1) if p.poll() is not None]
            if dead or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if dead:
            rank, proc = dead[0]
            cause = (f"tensor-parallel worker rank {rank} (pid {proc.pid}) exited with code "
                     f"{proc.returncode}")
        with self._lock:
            first = self.failed is None
            if first:
                self.failed = WorkerFailed(f"{cause}; the engine cannot continue")
        if first:
            logger.error("%s", self.failed)
            _stop(self.procs, 0.0)
            for callback in self._callbacks:
                callback(self.failed)
            if self.device.type == "cuda":
                _exit_later(NCCL_FAILSAFE_S)
        return self.failed  # type: ignore[return-value]  # set above, never unset

    def _watch(self) -> None:
        while not self.closed and self.failed is None:
            for proc in self.procs:
                if proc.poll() is not None and not self.closed:
                    self._fail("")
                    return
            time.sleep(0.2)


def _exit_later(seconds: float) -> None:
    def exit_now() -> None:
        logger.error("a tensor-parallel step may be stuck in NCCL: exiting")
        os._exit(EXIT_CODE)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.start()


def _close_ref(ref: weakref.ref[TPDriver]) -> None:
    driver = ref()
    if driver is not None:
        driver.close()
