"""The inference engine; the public API is re-exported here."""

from engine.llm import LLM
from engine.outputs import CompletionOutput, Logprob, PositionLogprobs, RequestOutput
from engine.sampling_params import SamplingParams

__all__ = [
    "LLM",
    "CompletionOutput",
    "Logprob",
    "PositionLogprobs",
    "RequestOutput",
    "SamplingParams",
]
