"""A tensor-parallel worker: load this rank's shard, then run every step rank 0 sends.

Spawned by rank 0 as `python -m engine.parallel.worker ...`, or entered from EngineCore
on a torchrun rank other than 0. Exit codes: 0 after rank 0's "stop", 1 on any failure
(rank 0 gone, a collective broken, a load error).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time

import torch

from engine.config import EngineConfig
from engine.embedding.decoder_pooling import embed_with_decoder
from engine.parallel.comm import TPComm
from engine.worker.setup import setup_rank

logger = logging.getLogger("engine.parallel.worker")


@torch.inference_mode()
def serve_worker(config: EngineConfig, device: torch.device, comm: TPComm) -> int:
    """Run rank 0's messages until it says stop (0), or until the group breaks (1)."""
    try:
        runner = setup_rank(config, device, comm).runner
        while True:
            message = comm.receive()
            kind = message[0]
            if kind == "step":
                runner.copy_blocks(message[1])
                runner.execute_full(message[2])
            elif kind == "embed":
                embed_with_decoder(runner.model, device, config.block_size,
                                   config.max_num_batched_tokens, message[1], message[2])
            elif kind == "stop":
                return 0
            else:
                raise ValueError(f"unknown message {kind!r} from rank 0")
    except Exception:
        logger.exception("tensor-parallel worker rank %d failed", comm.rank)
        return 1


def _exit_with_parent(parent: int) -> None:
    """Spawned workers end when rank 0's process does, even if it was killed outright."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.parallel.worker")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--init", required=True, help="torch.distributed init_method")
    p.add_argument("--parent", type=int, required=True, help="rank 0's pid")
    p.add_argument("--config", required=True, help="the EngineConfig as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s rank{args.rank} %(levelname)s "
                        "%(name)s: %(message)s")
    _exit_with_parent(args.parent)
    from engine.parallel.driver import init_comm, rank_device
    from engine.worker.setup import parse_device

    config = EngineConfig(**json.loads(args.config))
    device = rank_device(parse_device(config.device), args.rank)
    comm = init_comm(args.rank, config.tensor_parallel_size, args.init, device)
    code = serve_worker(config, device, comm)
    os._exit(code)  # skip interpreter teardown (and destroy_process_group's waits)


if __name__ == "__main__":
    sys.exit(main())
