"""Text <-> token ids: the Tokenizer facade over its backends (tokenizers, sentencepiece,
GGUF vocabularies), chat templates, and incremental detokenization with stop strings."""

from engine.tokenizer.tokenizer import Tokenizer

__all__ = ["Tokenizer"]
