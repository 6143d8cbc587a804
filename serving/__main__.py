"""`python -m serving --model M [--model M2 ...]`: load the engines and serve the OpenAI API.

The port opens first and answers /health with 503 while the models load, so a supervisor
can tell "loading" from "dead". SIGINT/SIGTERM: stop accepting (the port closes; kept-alive
connections get 503 not_ready), give
in-flight requests settings.shutdown_grace_s to finish, then end the rest: a stream that
has begun gets an error event (code server_shutting_down) and [DONE], a request not yet
answered a 503 with that code; close the connections, shut the engines down, exit 0 -
within the grace period and about a second. Exit codes: 2 for bad input (flags, a model
that cannot load), 1 when the port cannot be opened, 3 when an engine fails for good (a
tensor-parallel worker died: its requests are answered 500 first, then the server exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from typing import Any

from aiohttp import web

from engine import AsyncEngine
from serving.app import make_app
from serving.cli import (
    CLIError,
    EngineSummary,
    ServePlan,
    check_model_paths,
    engine_summary,
    parse_args,
)
from serving.connections import make_runner
from serving.embedding_startup import Closer, load_embeddings
from serving.errors import server_shutting_down
from serving.served import ServedEncoder, ServedModel
from serving.state import ServerState

logger = logging.getLogger("serving")

# After the grace period: how long the requests that were just ended get to send their last
# words (an error event, a 503), and then how long aiohttp waits for each connection before
# it cancels what is left. Both are spent only by requests that do not end when told to.
CUT_WAIT_S = 0.3
CLOSE_TIMEOUT_S = 0.2
ENGINE_FAILED = 3  # exit code: an engine cannot run any more (a tensor-parallel worker died)


def startup_line(served: ServedModel, s: EngineSummary) -> str:
    aliases = f" (aliases: {', '.join(served.aliases)})" if served.aliases else ""
    fallback = f", fallback {served.fallback}" if served.fallback else ""
    return (f"model {served.name}{aliases}: {s.parameters / 1e6:.2f}M parameters, dtype "
            f"{s.dtype} on {s.device}, {s.weights} weights, {s.kernels} kernels, KV cache {s.kv_blocks} blocks = {s.kv_tokens} tokens, "
            f"max_model_len {s.max_model_len}{fallback}")


async def load_models(plan: ServePlan, engines: list[AsyncEngine]) -> list[ServedModel]:
    """Build every engine off the event loop (loading blocks for seconds); `engines` collects
    them as they come, so that a failure or a signal midway can still shut them down."""
    served = []
    for spec in plan.models:
        logger.info("loading %s as %s", spec.config.model, spec.names[0])
        engine = await asyncio.to_thread(AsyncEngine, spec.config)
        engines.append(engine)
        served.append(ServedModel(spec.names[0], engine, engine.max_model_len,
                                  aliases=spec.names[1:], fallback=plan.fallbacks.get(
                                      spec.names[0])))
    check_fallbacks(served)
    for model in served:
        logger.info(startup_line(model, engine_summary(model.engine)))
    return served


async def load_all(plan: ServePlan, engines: list[AsyncEngine], closers: list[Closer]
                   ) -> tuple[list[ServedModel], tuple[list[ServedEncoder], Any]]:
    """The chat engines, then the embedding model, then the retrieval store (one at a time:
    two loads at once would run two torch thread teams against each other; the store last,
    so a failed start leaves the data directory untouched)."""
    served = await load_models(plan, engines)
    return served, await load_embeddings(plan, closers)


def check_fallbacks(served: list[ServedModel]) -> None:
    by_name = {m.name: m for m in served}
    for model in served:
        if model.fallback is None:
            continue
        longer = by_name[model.fallback]
        if longer.max_model_len <= model.max_model_len:
            raise CLIError(f"--fallback {model.name}={longer.name}: {longer.name}'s context "
                           f"({longer.max_model_len}) is not longer than {model.name}'s "
                           f"({model.max_model_len})")


async def wait_first(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(e.wait()) for e in events]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()


def install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def wait_loaded(load: asyncio.Task[Any], stop: asyncio.Event) -> bool:
    """True when the models loaded; False when a signal came first (loading is abandoned)."""
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({load, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if load.done():
        load.result()  # re-raises a loading error
        return True
    load.cancel()  # the loading thread itself runs on; its engine is never used
    with contextlib.suppress(asyncio.CancelledError):
        await load
    return False


async def wait_idle(state: ServerState, seconds: float) -> None:
    """Until no HTTP request is in flight, or `seconds` have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while state.in_flight and loop.time() < deadline:
        await asyncio.sleep(min(0.02, max(0.0, deadline - loop.time())))


async def drain(state: ServerState, runner: web.AppRunner, engines: list[AsyncEngine],
                grace: float) -> None:
    """Stop accepting; let in-flight requests finish within `grace` seconds; then end the
    generations still running, which answers their requests (see the module's docstring)."""
    state.ready = False  # requests on kept-alive connections get 503 not_ready
    for site in list(runner.sites):
        await site.stop()  # no new connections
    await wait_idle(state, grace)
    if state.in_flight:
        logger.info("grace period over: ending %d request(s)", state.in_flight)
        for engine in engines:
            engine.fail_all(server_shutting_down())
        await wait_idle(state, CUT_WAIT_S)


async def serve(plan: ServePlan) -> int:
    state = ServerState(models=[], settings=plan.settings, ready=False)
    # Requests are drained before the runner's cleanup (drain), so its own wait is short:
    # aiohttp spends it twice, first waiting and then after cancelling each handler.
    runner = make_runner(make_app(state), plan.settings, handler_cancellation=True,
                         access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S)
    await runner.setup()
    engines: list[AsyncEngine] = []
    closers: list[Closer] = []  # the embedding model and the retrieval store
    try:
        site = web.TCPSite(runner, plan.host, plan.port)
        try:
            await site.start()
        except OSError as e:
            print(f"error: cannot listen on {plan.host}:{plan.port}: {e}", file=sys.stderr)
            return 1
        stop = asyncio.Event()
        install_signals(stop)
        loop = asyncio.get_running_loop()
        load = asyncio.create_task(load_all(plan, engines, closers))
        try:
            if not await wait_loaded(load, stop):
                logger.info("signal received while loading; exiting")
                return 0
        except (CLIError, FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        state.models, (state.encoders, state.retrieval) = load.result()
        failed = asyncio.Event()
        for engine in engines:
            engine.on_fatal(lambda _: loop.call_soon_threadsafe(failed.set))
        state.ready = True
        logger.info("serving %d model(s) on http://%s:%d", len(engines), plan.host, plan.port)
        await wait_first(stop, failed)
        if failed.is_set():
            logger.error("an engine failed for good (see above): exiting")
            await drain(state, runner, engines, plan.settings.shutdown_grace_s)
            return ENGINE_FAILED
        logger.info("shutting down: finishing in-flight requests (up to %gs)",
                    plan.settings.shutdown_grace_s)
        await drain(state, runner, engines, plan.settings.shutdown_grace_s)
        return 0
    finally:
        state.ready = False  # requests on kept-alive connections get 503 from here on
        await runner.cleanup()  # closes the socket, drains, then cancels what is left
        for engine in engines:
            await engine.shutdown()
        for close in reversed(closers):
            await close()


def torchrun_worker(plan: ServePlan) -> int:
    """Under torchrun, a rank other than 0 serves rank 0's tensor-parallel engine: no HTTP,
    no other model; it returns when rank 0 shuts down (0) or fails (1)."""
    from engine.engine_core import EngineCore

    split = [m for m in plan.models if m.config.tensor_parallel_size > 1]
    if len(split) != 1:
        print("error: under torchrun exactly one --model is served with "
              "--tensor-parallel-size > 1", file=sys.stderr)
        return 2
    try:
        EngineCore(split[0].config)  # the worker loop; raises SystemExit at its end
    except SystemExit as e:
        return int(e.code or 0)
    return 1


def main(argv: list[str] | None = None) -> int:
    try:
        plan = parse_args(argv)
        check_model_paths(plan)
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=plan.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rank = os.environ.get("RANK")
    if rank is not None and rank != "0" and "WORLD_SIZE" in os.environ:
        return torchrun_worker(plan)
    code = asyncio.run(serve(plan))
    # Everything is closed: skip the interpreter's last collection over the engines' many
    # objects (about a second with the default KV cache), which would delay the exit.
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
