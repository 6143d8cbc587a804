"""AsyncEngine: concurrent streams, incremental outputs, abort by closing a stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine import LLM, AsyncEngine, EngineConfig, InvalidRequest, SamplingParams


@pytest.fixture
def engine(tiny_llama: Path) -> AsyncEngine:
    return AsyncEngine(EngineConfig(str(tiny_llama), max_num_batched_tokens=32))


def test_concurrent_streams_match_offline(engine: AsyncEngine, tiny_llama: Path) -> None:
    prompts = [[3 + i, 40 + i, 90 + 2 * i] * (i + 1) for i in range(6)]
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)

    async def consume(i: int) -> tuple[list[list[int]], str]:
        seen = []
        async for out in await engine.add_request(f"r{i}", prompts[i], params):
            seen.append(list(out.outputs[0].token_ids))
        return seen, out.outputs[0].finish_reason

    async def main() -> list:
        try:
            return await asyncio.gather(*(consume(i) for i in range(len(prompts))))
        finally:
            await engine.shutdown()

    results = asyncio.run(main())
    offline = LLM(str(tiny_llama)).generate(prompts, params)
    for (seen, reason), ref in zip(results, offline, strict=True):
        # DELTA outputs: token by token, each holding only the new one.
        assert [len(s) for s in seen] == [1] * 10
        assert [t for s in seen for t in s] == ref.outputs[0].token_ids
        assert reason == "length"


def test_closing_a_stream_aborts_and_frees_blocks(engine: AsyncEngine) -> None:
    bm = engine.core.block_manager
    start = bm.num_free_blocks

    async def main() -> None:
        try:
            stream = await engine.add_request("long", list(range(3, 40)), SamplingParams(max_tokens=200))
            received = 0
            async for out in stream:
                received += len(out.outputs[0].token_ids)
                if received >= 3:
                    break  # a client that goes away
            await stream.aclose()
            for _ in range(50):  # the abort lands between steps
                if engine.num_active == 0 and not engine.core.has_unfinished():
                    break
                await asyncio.sleep(0.01)
        finally:
            await engine.shutdown()

    asyncio.run(main())
    assert not engine.core.has_unfinished()
    assert bm.num_free_blocks == start


def test_abort_while_waiting_ends_the_stream(engine: AsyncEngine) -> None:
    async def main() -> list:
        try:
            stream = await engine.add_request("w", [5, 6, 7], SamplingParams(max_tokens=50))
            engine.abort("w")
            return [out async for out in stream]
        finally:
            await engine.shutdown()

    outs = asyncio.run(main())
    assert outs == [] or outs[-1].outputs[0].finish_reason == "abort"
    assert not engine.core.has_unfinished()


def test_bad_input_raises_before_queueing(engine: AsyncEngine) -> None:
    async def main() -> None:
        try:
            with pytest.raises(InvalidRequest, match="empty") as e:
                await engine.add_request("e", [], SamplingParams())
            assert e.value.param == "prompt"
            with pytest.raises(InvalidRequest, match="context"):
                await engine.add_request("big", [5] * 10_000, SamplingParams())
            with pytest.raises(InvalidRequest, match="logit_bias") as e:
                await engine.add_request("bias", [5], SamplingParams(logit_bias={10**6: 1.0}))
            assert e.value.param == "logit_bias"
            assert engine.num_active == 0 and engine.stats().num_waiting == 0
        finally:
            await engine.shutdown()

    asyncio.run(main())


def test_grammars_compile_off_the_event_loop(engine: AsyncEngine) -> None:
    from engine import GuidedDecoding

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    good = SamplingParams(guided=GuidedDecoding(json_schema=schema), max_tokens=2)
    bad = SamplingParams(guided=GuidedDecoding(json_schema={"type": "no-such-type"}))
    loop_thread = []

    async def main() -> None:
        import threading

        loop_thread.append(threading.get_ident())
        try:
            async for _ in await engine.add_request("good", [5, 6], good):
                pass
            with pytest.raises(InvalidRequest, match="guided") as e:
                await engine.add_request("bad", [5, 6], bad)
            assert e.value.param == "guided"
        finally:
            await engine.shutdown()

    grammars = engine.core.grammars
    compiled_in: list[int] = []
    compile_one = grammars._compile

    def spy(spec: object) -> object:
        import threading

        compiled_in.append(threading.get_ident())
        return compile_one(spec)

    grammars._compile = spy
    asyncio.run(main())
    assert grammars.num_cached == 1  # the good one
    assert len(compiled_in) == 2 and all(t != loop_thread[0] for t in compiled_in)


def test_abort_while_validating_leaves_nothing_behind(engine: AsyncEngine) -> None:
    """A request aborted while its validation runs (in its thread) is refused, not queued."""
    import time as _time

    validate = engine.engine.validate

    def slow_validate(*args: object) -> object:
        _time.sleep(0.3)
        return validate(*args)

    async def main() -> None:
        try:
            async for _ in await engine.add_request("first", [5, 6], SamplingParams(max_tokens=1)):
                pass  # the step loop is running from here on
            engine.engine.validate = slow_validate  # type: ignore[method-assign]
            pending = asyncio.create_task(
                engine.add_request("late", [5, 6], SamplingParams(max_tokens=5)))
            await asyncio.sleep(0.1)
            engine.abort("late")
            with pytest.raises(InvalidRequest, match="aborted before it was queued"):
                await pending
            assert engine.num_active == 0 and engine.stats().num_waiting == 0
            assert not engine.core.has_unfinished()
        finally:
            await engine.shutdown()

    asyncio.run(main())
