"""The inference engine; the public API is re-exported here."""

from engine.async_engine import AsyncEngine
from engine.config import EngineConfig
from engine.embedding import (
    POOLING_MODES,
    AsyncSentenceEncoder,
    EmbeddingOutput,
    PoolingConfig,
    SentenceEncoder,
)
from engine.guided import GuidedDecoding
from engine.llm import LLM
from engine.outputs import CompletionOutput, Logprob, PositionLogprobs, RequestOutput
from engine.sampling_params import SamplingParams

__all__ = [
    "LLM",
    "POOLING_MODES",
    "AsyncEngine",
    "AsyncSentenceEncoder",
    "CompletionOutput",
    "EmbeddingOutput",
    "EngineConfig",
    "GuidedDecoding",
    "Logprob",
    "PoolingConfig",
    "PositionLogprobs",
    "RequestOutput",
    "SamplingParams",
    "SentenceEncoder",
]
