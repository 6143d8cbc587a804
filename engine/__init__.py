"""The inference engine; the public API is re-exported here."""

from engine.async_engine import AsyncEngine, NewRequest
from engine.config import EngineConfig
from engine.embedding import (
    POOLING_MODES,
    AsyncSentenceEncoder,
    EmbeddingOutput,
    PoolingConfig,
    SentenceEncoder,
)
from engine.engine_core import EngineSnapshot
from engine.errors import InvalidRequest
from engine.guided import GuidedDecoding
from engine.llm import LLM
from engine.llm_engine import LLMEngine
from engine.outputs import (
    CompletionOutput,
    Logprob,
    PositionLogprobs,
    RequestOutput,
    RequestOutputKind,
)
from engine.sampling_params import SamplingParams

__all__ = [
    "LLM",
    "POOLING_MODES",
    "AsyncEngine",
    "AsyncSentenceEncoder",
    "CompletionOutput",
    "EmbeddingOutput",
    "EngineConfig",
    "EngineSnapshot",
    "GuidedDecoding",
    "InvalidRequest",
    "LLMEngine",
    "Logprob",
    "NewRequest",
    "PoolingConfig",
    "PositionLogprobs",
    "RequestOutput",
    "RequestOutputKind",
    "SamplingParams",
    "SentenceEncoder",
]
