"""Fixtures: a tiny random BERT sentence-embedding folder, and the real all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

WORDS = ["the", "a", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by",
         "at", "from", "it", "that", "this", "be", "are", "cat", "dog", "paris", "france",
         "city", "river", "capital", "bank", "money", "tree", "green", "blue", "red", "quick",
         "brown", "fox", "jumps", "over", "lazy", "sun", "moon", "star", "water", "fire",
         "earth", "air", "book", "read", "write", "code", "python", "train", "model",
         "vector", "search", "query", "answer", "question", "music", "song", "guitar",
         "piano"]


def write_wordpiece_tokenizer(folder: Path) -> int:
    """A BERT-style WordPiece tokenizer.json ([CLS] x [SEP], lowercasing); returns vocab size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    vocab += list(".,!?'-0123456789")
    ids = {t: i for i, t in enumerate(dict.fromkeys(vocab))}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    # Padding/truncation saved in the file, as all-MiniLM-L6-v2's are: the loader must undo them.
    tok.enable_padding(length=64, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(64)
    tok.save(str(folder / "tokenizer.json"))
    return len(ids)


def make_tiny_bert(folder: Path, pooling: str = "mean", normalize: bool = True,
                   max_seq_length: int = 48) -> Path:
    """A random BertModel saved by transformers, with sentence-transformers' side files."""
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_wordpiece_tokenizer(folder)
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=64, type_vocab_size=2, pad_token_id=0)
    torch.manual_seed(7)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    flags = {"pooling_mode_mean_tokens": pooling == "mean",
             "pooling_mode_cls_token": pooling == "cls",
             "pooling_mode_max_tokens": pooling == "max",
             "pooling_mode_mean_sqrt_len_tokens": pooling == "mean_sqrt_len",
             "pooling_mode_lasttoken": pooling == "last",
             "word_embedding_dimension": 32}
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(flags))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="session")
def minilm() -> Path:
    from weights import model_path

    path = model_path("all-minilm-l6-v2")
    if not (path / "model.safetensors").exists():
        pytest.skip(f"all-MiniLM-L6-v2 is not fetched ({path}); run python -m weights.fetch")
    os.environ["HF_HUB_OFFLINE"] = "1"  # sentence-transformers must never reach for the hub
    return path
