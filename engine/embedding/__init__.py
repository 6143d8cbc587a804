"""Embeddings: BERT sentence encoders and pooled hidden states of the Llama models."""

from engine.embedding.async_encoder import AsyncSentenceEncoder
from engine.embedding.pooling import POOLING_MODES, PoolingConfig
from engine.embedding.sentence_encoder import EmbeddingOutput, SentenceEncoder

__all__ = ["POOLING_MODES", "AsyncSentenceEncoder", "EmbeddingOutput", "PoolingConfig", "SentenceEncoder"]
