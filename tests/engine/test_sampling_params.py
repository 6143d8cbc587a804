import pytest

from engine.errors import InvalidRequest
from engine.sampling_params import SamplingParams


def test_defaults() -> None:
    p = SamplingParams()
    assert p.n == 1 and p.best_of is None
    assert p.temperature == 1.0 and p.top_p == 1.0 and p.top_k == 0 and p.min_p == 0.0
    assert p.max_tokens == 16 and p.min_tokens == 0
    assert p.stop == [] and p.stop_token_ids == []
    assert p.logit_bias is None and p.logprobs is None and p.seed is None
    assert p.skip_special_tokens and not p.ignore_eos and not p.include_stop_str_in_output
    assert not p.greedy


def test_greedy_property() -> None:
    assert SamplingParams(temperature=0).greedy
    assert SamplingParams(temperature=0.7, top_k=1).greedy
    assert not SamplingParams(temperature=0.7, top_k=2).greedy


def test_normalisation() -> None:
    p = SamplingParams(top_k=-1, stop="###", stop_token_ids=(5, 6), temperature=1, top_p=1)
    assert p.top_k == 0
    assert p.stop == ["###"]
    assert p.stop_token_ids == [5, 6]
    assert isinstance(p.temperature, float) and isinstance(p.top_p, float)
    assert SamplingParams(stop=["a", "b"]).stop == ["a", "b"]


def test_logit_bias_string_keys_are_converted() -> None:
    p = SamplingParams(logit_bias={"50256": -100, 7: 2.5})
    assert p.logit_bias == {50256: -100.0, 7: 2.5}


def test_accepts_boundaries() -> None:
    SamplingParams(
        n=2,
        best_of=2,
        temperature=0.0,
        top_p=1.0,
        top_k=1,
        min_p=1.0,
        presence_penalty=-2,
        frequency_penalty=2,
        repetition_penalty=0.01,
        logit_bias={0: 100, 1: -100},
        max_tokens=1,
        min_tokens=1,
        logprobs=20,
        seed=0,
    )
    SamplingParams(max_tokens=None, min_tokens=1000, logprobs=0, seed=-3)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"n": 0}, "n"),
        ({"n": 2, "best_of": 1}, "best_of"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"min_p": 1.1}, "min_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"logit_bias": {1: 101}}, "logit_bias"),
        ({"logit_bias": {-1: 1}}, "logit_bias"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": [1, 2]}, "logit_bias"),
        ({"logit_bias": {1: "x"}}, "logit_bias"),
        ({"seed": 1.5}, "seed"),
        ({"stop": ["ok", ""]}, "stop"),
        ({"stop": 5}, "stop"),
        ({"stop": ["ok", 3]}, "stop"),
        ({"stop_token_ids": [1, -1]}, "stop_token_ids"),
        ({"stop_token_ids": 3}, "stop_token_ids"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"max_tokens": 4, "min_tokens": 5}, "min_tokens"),
        ({"logprobs": 21}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"ignore_eos": 1}, "ignore_eos"),
        ({"skip_special_tokens": "no"}, "skip_special_tokens"),
    ],
)
def test_rejects_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError) as info:
        SamplingParams(**kwargs)
    assert str(info.value).startswith(field), str(info.value)


def test_list_inputs_are_bounded_at_the_documented_limits() -> None:
    """Their cost is paid at every generated token: one request must not be able to make
    every step slow. The limits themselves are accepted."""
    from engine.sampling_params import (
        MAX_LOGIT_BIAS_ENTRIES,
        MAX_STOP_LENGTH,
        MAX_STOP_STRINGS,
        MAX_STOP_TOKEN_IDS,
    )

    SamplingParams(stop=[f"{i:03d}" + "x" * (MAX_STOP_LENGTH - 3) for i in range(MAX_STOP_STRINGS)],
                   stop_token_ids=list(range(MAX_STOP_TOKEN_IDS)),
                   logit_bias={i: 1.0 for i in range(MAX_LOGIT_BIAS_ENTRIES)})
    too_many = {
        "stop": [str(i) for i in range(MAX_STOP_STRINGS + 1)],
        "stop_token_ids": list(range(MAX_STOP_TOKEN_IDS + 1)),
        "logit_bias": {i: 1.0 for i in range(MAX_LOGIT_BIAS_ENTRIES + 1)},
    }
    for field, value in [*too_many.items(), ("stop", "y" * (MAX_STOP_LENGTH + 1)),
                         ("stop", ["ok", "y" * (MAX_STOP_LENGTH + 1)])]:
        with pytest.raises(InvalidRequest) as info:
            SamplingParams(**{field: value})
        assert info.value.param == field and "at most" in str(info.value), str(info.value)


def test_error_message_shape() -> None:
    with pytest.raises(ValueError, match=r"^temperature must be >= 0, got -1$"):
        SamplingParams(temperature=-1)


def test_check_vocab() -> None:
    SamplingParams(logit_bias={9: 1.0}, stop_token_ids=[9]).check_vocab(10)
    with pytest.raises(ValueError, match="^logit_bias"):
        SamplingParams(logit_bias={10: 1.0}).check_vocab(10)
    with pytest.raises(ValueError, match="^stop_token_ids"):
        SamplingParams(stop_token_ids=[10]).check_vocab(10)
