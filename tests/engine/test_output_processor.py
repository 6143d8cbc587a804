"""OutputProcessor: the core's per-sequence deltas in, RequestOutputs of each kind out.

Driven by hand-made SequenceUpdates over a real byte-level BPE tokenizer, so every rule
(text hold-back, stop strings, EOS, ranking, kinds) is checked without a model.
"""

from __future__ import annotations

import itertools
import random

import pytest

from engine import RequestOutput, RequestOutputKind, SamplingParams
from engine.engine_core import SequenceUpdate
from engine.output_processor import OutputProcessor
from engine.tokenizer import Tokenizer
from engine.worker.sampler import TokenLogprobs
from tests.engine.tokenizer_fixtures import train_byte_level_bpe, write_hf_dir

KINDS = list(RequestOutputKind)
TEXT = "Hello there, café 🦄! The quick brown fox jumps STOP over the lazy dog."


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return Tokenizer.from_dir(write_hf_dir(tmp_path_factory.mktemp("bpe"), train_byte_level_bpe()))


def update(rid: str, token: int, *, index: int = 0, finish: str | None = None,
           stop: int | None = None, logprob: float | None = None) -> SequenceUpdate:
    lps = [TokenLogprobs(token, logprob, [(token, logprob)])] if logprob is not None else None
    return SequenceUpdate(rid, index, [token], lps, finish, stop, 3)


def run(tok: Tokenizer, ids: list[int], params: SamplingParams, kind: RequestOutputKind,
        last_finish: str | None = "length", last_stop: int | None = None
        ) -> tuple[list[RequestOutput], list[tuple[str, int]]]:
    """Feed `ids` one per step; the last update carries `last_finish`."""
    proc = OutputProcessor(tok)
    proc.add_request("r", None, [1, 2], params, 1, kind)
    outputs, stopped = [], []
    for i, t in enumerate(ids):
        last = i == len(ids) - 1
        step = proc.process([update("r", t, finish=last_finish if last else None,
                                    stop=last_stop if last else None,
                                    logprob=-0.5 if params.logprobs is not None else None)])
        outputs += step.outputs
        stopped += step.stopped
        if step.stopped:
            break  # the driver ends the sequence in the core: no more updates
    return outputs, stopped


def fold(outputs: list[RequestOutput]) -> RequestOutput:
    total = outputs[0]
    for out in outputs[1:]:
        total.add(out)
    return total


@pytest.mark.parametrize("stop", [[], ["STOP"], ["🦄!", "zz"]])
def test_the_three_kinds_agree(tok: Tokenizer, stop: list[str]) -> None:
    ids = tok.encode(TEXT, add_special_tokens=False)
    params = SamplingParams(stop=stop, logprobs=1)
    results = {k: run(tok, ids, params, k) for k in KINDS}
    final = results[RequestOutputKind.FINAL_ONLY][0]
    assert len(final) == 1 and final[0].finished
    cumulative = results[RequestOutputKind.CUMULATIVE][0]
    deltas = results[RequestOutputKind.DELTA][0]
    assert cumulative[-1].outputs[0] == final[0].outputs[0]
    assert fold(deltas).outputs[0] == final[0].outputs[0]
    # Cumulative outputs only ever grow; deltas never repeat what was sent.
    texts = [o.outputs[0].text for o in cumulative]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    expected = TEXT.split(stop[0])[0] if stop else TEXT
    assert final[0].outputs[0].text == expected


def test_delta_outputs_hold_only_what_is_new(tok: Tokenizer) -> None:
    ids = tok.encode(TEXT, add_special_tokens=False)
    deltas, _ = run(tok, ids, SamplingParams(logprobs=0), RequestOutputKind.DELTA)
    assert all(len(d.outputs[0].token_ids) == 1 for d in deltas)
    assert all(len(d.outputs[0].logprobs) == 1 for d in deltas)
    assert "".join(d.outputs[0].text for d in deltas) == TEXT
    assert [d.finished for d in deltas] == [False] * (len(deltas) - 1) + [True]


def test_stop_string_ends_the_sequence_and_cuts_the_text(tok: Tokenizer) -> None:
    ids = tok.encode(TEXT, add_special_tokens=False)
    for include in (False, True):
        params = SamplingParams(stop=["STOP"], include_stop_str_in_output=include)
        outputs, stopped = run(tok, ids, params, RequestOutputKind.DELTA)
        assert stopped == [("r", 0)]
        text = "".join(o.outputs[0].text for o in outputs)
        assert text == TEXT[: TEXT.index("STOP") + (4 if include else 0)]
        last = outputs[-1].outputs[0]
        assert outputs[-1].finished and (last.finish_reason, last.stop_reason) == ("stop", "STOP")
        # No piece of the stop string was ever sent and taken back.
        assert all("ST" not in o.outputs[0].text for o in outputs[:-1]) or include


def test_held_back_text_is_released_when_the_sequence_ends_otherwise(tok: Tokenizer) -> None:
    ids = tok.encode("abc ST", add_special_tokens=False)
    deltas, stopped = run(tok, ids, SamplingParams(stop=["STOP"]), RequestOutputKind.DELTA)
    assert not stopped
    assert "".join(d.outputs[0].text for d in deltas) == "abc ST"
    assert deltas[-1].outputs[0].finish_reason == "length"


def test_eos_token_counts_but_its_text_does_not(tok: Tokenizer) -> None:
    ids = tok.encode("Hi there", add_special_tokens=False)
    eos = tok.encode("!", add_special_tokens=False)[0]  # any id: the core decided it ended
    final, _ = run(tok, [*ids, eos], SamplingParams(), RequestOutputKind.FINAL_ONLY,
                   last_finish="stop")
    out = final[0].outputs[0]
    assert out.text == "Hi there" and out.token_ids == [*ids, eos]
    assert (out.finish_reason, out.stop_reason) == ("stop", None)
    final, _ = run(tok, [*ids, eos], SamplingParams(), RequestOutputKind.FINAL_ONLY,
                   last_finish="stop", last_stop=eos)  # a stop_token_ids match
    assert final[0].outputs[0].text == "Hi there" and final[0].outputs[0].stop_reason == eos


def test_best_of_returns_the_n_most_likely_once_all_are_done(tok: Tokenizer) -> None:
    proc = OutputProcessor(tok)
    params = SamplingParams(n=2, best_of=3)  # logprobs not asked: computed for ranking only
    proc.add_request("r", "p", [1], params, 3, RequestOutputKind.DELTA)
    words = {0: "low", 1: "high", 2: "mid"}
    scores = {0: -9.0, 1: -1.0, 2: -4.0}
    for i in range(3):
        ids = tok.encode(words[i], add_special_tokens=False)
        for j, t in enumerate(ids):
            done = "length" if j == len(ids) - 1 else None
            out = proc.process([update("r", t, index=i, finish=done,
                                       logprob=scores[i] / len(ids))]).outputs
            assert out == [] or i == 2 and done  # nothing until every sample ended
    assert out[0].finished
    assert [(o.index, o.text) for o in out[0].outputs] == [(0, "high"), (1, "mid")]
    assert all(o.logprobs is None and o.cumulative_logprob is None for o in out[0].outputs)
    assert not proc.has_unfinished()


def test_samples_stream_independently_under_n(tok: Tokenizer) -> None:
    proc = OutputProcessor(tok)
    proc.add_request("r", None, [1], SamplingParams(n=2), 2, RequestOutputKind.DELTA)
    a, b = (tok.encode(w, add_special_tokens=False)[0] for w in ("x", "y"))
    out = proc.process([update("r", a, index=0), update("r", b, index=1, finish="length")])
    assert [(o.index, o.text, o.finish_reason) for o in out.outputs[0].outputs] == [
        (0, "x", None), (1, "y", "length")]
    assert not out.outputs[0].finished
    out = proc.process([update("r", a, index=0, finish="abort")])
    assert [(o.index, o.text, o.finish_reason) for o in out.outputs[0].outputs] == [
        (0, "x", "abort")]  # only the sample with news
    assert out.outputs[0].finished and not proc.has_unfinished()


def test_random_update_streams_fold_to_the_final_output(tok: Tokenizer) -> None:
    rng = random.Random(0)
    for _ in range(30):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randint(1, 40))]
        params = SamplingParams(stop=[rng.choice(["e", "th", "zz"])], logprobs=0)
        deltas, _ = run(tok, ids, params, RequestOutputKind.DELTA)
        final, _ = run(tok, ids, params, RequestOutputKind.FINAL_ONLY)
        assert fold(deltas).outputs[0] == final[0].outputs[0]


@pytest.mark.parametrize("per_step", [4, 7])
def test_several_tokens_per_step_stop_where_a_stop_string_ends(tok: Tokenizer,
                                                               per_step: int) -> None:
    """Speculative decoding reports several tokens per step: a stop string ending at one of
    them ends tokens, logprobs and text there, as one token per step does."""
    ids = tok.encode(TEXT, add_special_tokens=False)
    params = SamplingParams(stop=["STOP"], logprobs=0)
    want = run(tok, ids, params, RequestOutputKind.FINAL_ONLY)[0][0].outputs[0]
    proc = OutputProcessor(tok)
    proc.add_request("r", None, [1, 2], params, 1, RequestOutputKind.FINAL_ONLY)
    outputs = []
    for start in range(0, len(ids), per_step):
        chunk = ids[start : start + per_step]
        lps = [TokenLogprobs(t, -0.5, []) for t in chunk]
        step = proc.process([SequenceUpdate("r", 0, chunk, lps, None, None, 3)])
        outputs += step.outputs
        if step.stopped:
            break
    (got,) = [o.outputs[0] for o in outputs]
    assert got.text == want.text == TEXT.split("STOP")[0]
    assert got.token_ids == want.token_ids and len(got.logprobs) == len(want.token_ids)
    assert got.finish_reason == "stop" and got.stop_reason == "STOP"


@pytest.mark.parametrize("kind", KINDS)
def test_prompt_logprobs_come_with_text_and_once_in_a_delta_stream(tok: Tokenizer,
                                                                    kind: RequestOutputKind
                                                                    ) -> None:
    prompt = tok.encode("Hello there")
    assert len(prompt) > 2
    proc = OutputProcessor(tok)
    proc.add_request("r", None, prompt, SamplingParams(max_tokens=3, prompt_logprobs=1), 1, kind)
    entries = [TokenLogprobs(t, -1.0 - i, [(prompt[0], -0.25)], i + 2)
               for i, t in enumerate(prompt[1:])]
    first = update("r", 5)
    first.prompt_logprobs = entries
    outputs = [*proc.process([first]).outputs,
               *proc.process([update("r", 6)]).outputs,
               *proc.process([update("r", 7, finish="length")]).outputs]
    expected_top = [tok.decode([prompt[0]])]
    with_them = [o for o in outputs if o.prompt_logprobs is not None]
    if kind is RequestOutputKind.DELTA:
        assert outputs[0] is with_them[0] and len(with_them) == 1
    else:
        assert with_them == outputs  # every output holds everything so far
    plp = with_them[-1].prompt_logprobs
    assert plp[0] is None and len(plp) == len(prompt)
    for pos, (token, entry) in enumerate(zip(prompt[1:], plp[1:], strict=True)):
        assert entry.chosen.token_id == token and entry.chosen.token == tok.decode([token])
        assert entry.chosen.logprob == -1.0 - pos and entry.rank == pos + 2
        assert [t.token for t in entry.top] == expected_top
    assert fold(outputs).prompt_logprobs == plp
