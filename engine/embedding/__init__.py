"""Embeddings: BERT sentence encoders and pooled hidden states of the Llama models."""

from engine.embedding.async_encoder import AsyncSentenceEncoder
from engine.embedding.pooling import POOLING_MODES, PoolingConfig
from engine.embedding.sentence_encoder import EmbeddingOutput, SentenceEncoder
from engine.embedding.token_ids import ForeignTokenIds

__all__ = ["POOLING_MODES", "AsyncSentenceEncoder", "EmbeddingOutput", "ForeignTokenIds",
           "PoolingConfig", "SentenceEncoder"]
