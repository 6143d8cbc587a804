"""SentenceEncoder vs sentence-transformers: tiny random folders (every pooling mode) and
the real all-MiniLM-L6-v2 on 50 varied sentences."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from engine import PoolingConfig, SentenceEncoder
from tests.engine.embedding.conftest import make_tiny_bert

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_TEXTS = ["the quick brown fox jumps over the lazy dog", "cat", "paris, france!",
              "a book of code and python", "music " * 20, "sun moon star water fire earth air"]

SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Paris is the capital and most populous city of France.",
    "What is the boiling point of water at sea level?",
    "I love eating pizza with extra cheese on Friday nights.",
    "Quantum computers use qubits that can exist in superposition.",
    "The stock market fell sharply after the announcement.",
    "She plays the violin in the city orchestra.",
    "How do I reset my password?",
    "Photosynthesis converts light energy into chemical energy.",
    "The meeting has been moved to 3 p.m. tomorrow.",
    "Mount Everest is the highest mountain above sea level.",
    "def add(a, b): return a + b",
    "El gato duerme en el sofá.",
    "Der Hund bellt laut im Garten.",
    "東京は日本の首都です。",
    "Emojis like 🙂 and 🚀 are everywhere now.",
    "The mitochondria is the powerhouse of the cell.",
    "Please send the invoice by the end of the week.",
    "Neural networks learn representations from data.",
    "It rained all day, so the football match was cancelled.",
    "A bank is a financial institution that accepts deposits.",
    "We sat on the river bank and watched the boats.",
    "The recipe calls for two cups of flour and one egg.",
    "Shakespeare wrote Hamlet around the year 1600.",
    "Can you recommend a good book about history?",
    "The train to Berlin departs from platform nine.",
    "Vaccines train the immune system to recognise pathogens.",
    "Climate change is raising global average temperatures.",
    "My laptop battery drains too quickly.",
    "The Great Wall of China is visible from low orbit only with aid.",
    "Jupiter is the largest planet in our solar system.",
    "He ran the marathon in under three hours.",
    "SELECT name FROM users WHERE age > 30;",
    "The museum opens at nine and closes at five.",
    "Bees are essential pollinators for many crops.",
    "Interest rates were raised by a quarter of a point.",
    "The novel's ending surprised every reader.",
    "Turn left at the second traffic light.",
    "Water boils at 100 degrees Celsius.",
    "The children built a sandcastle on the beach.",
    "Electric cars are becoming more affordable.",
    "Our flight was delayed by two hours due to fog.",
    "The quick onboarding guide explains every step.",
    "Hello!",
    "ok",
    "A very long sentence " + "that keeps going and going " * 12 + "until it finally ends.",
    "Numbers like 3.14159, 2.71828 and 1.41421 are famous constants.",
    "Is this the real life? Is this just fantasy?",
    "The committee approved the budget for next year.",
]


def _st_vectors(path: Path, texts: list[str], batch_size: int = 32) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path), device="cpu")
    return st.encode(texts, convert_to_tensor=True, batch_size=batch_size).float()


def _ours(enc: SentenceEncoder, texts: list[str]) -> torch.Tensor:
    return torch.tensor([o.embedding for o in enc.embed(texts)])


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "mean_sqrt_len", "last"])
def test_every_pooling_mode_matches_sentence_transformers(
        tmp_path: Path, pooling: str) -> None:
    normalize = pooling != "max"  # one un-normalised case: raw vectors must match too
    folder = make_tiny_bert(tmp_path / pooling, pooling=pooling, normalize=normalize)
    enc = SentenceEncoder(str(folder))
    assert enc.pooling == PoolingConfig(pooling, normalize)
    torch.testing.assert_close(_ours(enc, TINY_TEXTS), _st_vectors(folder, TINY_TEXTS),
                               atol=1e-5, rtol=1e-4)


def test_batching_and_padding_do_not_change_a_vector(tiny_bert: Path) -> None:
    alone = SentenceEncoder(str(tiny_bert), batch_size=1)
    one_by_one = _ours(alone, TINY_TEXTS)
    for kwargs in ({"batch_size": 4}, {"max_batch_tokens": 40}, {}):
        batched = SentenceEncoder(str(tiny_bert), **kwargs)
        torch.testing.assert_close(_ours(batched, TINY_TEXTS), one_by_one, atol=1e-6, rtol=1e-5)


def test_micro_batches_respect_both_limits(tiny_bert: Path) -> None:
    enc = SentenceEncoder(str(tiny_bert), batch_size=3, max_batch_tokens=20)
    lengths = [5, 9, 2, 7, 7, 3, 4, 12, 1]
    groups = enc.micro_batches(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert len(g) <= 3 and len(g) * max(lengths[i] for i in g) <= 20 or len(g) == 1
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(lengths, reverse=True)  # similar lengths share a forward
    with pytest.raises(ValueError, match="max_batch_tokens"):
        SentenceEncoder(str(tiny_bert), max_batch_tokens=0)


def test_token_ids_and_text_give_the_same_vector(tiny_bert: Path) -> None:
    enc = SentenceEncoder(str(tiny_bert))
    ids = enc.tokenize(["cat and dog"])[0]
    by_text = enc.embed("cat and dog")[0]
    by_ids = enc.embed(ids)[0]
    assert by_ids.prompt_token_ids == by_text.prompt_token_ids == ids
    assert by_ids.embedding == pytest.approx(by_text.embedding, abs=1e-6)


def test_over_length_input_raises_unless_truncated(tiny_bert: Path) -> None:
    enc = SentenceEncoder(str(tiny_bert))
    text = "cat " * 60  # 62 tokens with [CLS]/[SEP]; the limit is 48
    with pytest.raises(ValueError, match=r"62 tokens.*48"):
        enc.embed(text)
    out = enc.embed(text, truncate=True)[0]
    assert len(out.prompt_token_ids) == 48
    assert out.prompt_token_ids[-1] == enc.tokenizer.token_to_id("[SEP]")
    with pytest.raises(ValueError, match="empty"):
        enc.embed("")
    with pytest.raises(ValueError, match="token ids"):
        enc.embed([[1, 2, 10**6]])


@pytest.mark.slow
def test_minilm_matches_sentence_transformers_on_50_sentences(minilm: Path) -> None:
    enc = SentenceEncoder("all-minilm-l6-v2")
    assert (enc.dim, enc.max_len) == (384, 256)
    assert enc.pooling == PoolingConfig("mean", True)
    ours = _ours(enc, SENTENCES)
    ref = _st_vectors(minilm, SENTENCES)
    assert len(SENTENCES) == 50
    cosine = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)
    assert cosine.min().item() >= 0.9999, cosine
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(50), atol=1e-5, rtol=0)


def test_async_encoder_runs_on_one_thread_and_leaves_the_default(tiny_bert: Path) -> None:
    import asyncio
    import threading

    from engine import AsyncSentenceEncoder

    before = torch.get_num_threads()
    enc = AsyncSentenceEncoder(str(tiny_bert))
    try:
        assert enc._executor.submit(torch.get_num_threads).result() == 1
        seen: list[int] = []
        later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        later.start()
        later.join()
        assert seen == [before] and torch.get_num_threads() == before  # e.g. the chat engine's
        out = asyncio.run(enc.embed(TINY_TEXTS[:2]))
        want = SentenceEncoder(str(tiny_bert)).embed(TINY_TEXTS[:2])
        torch.testing.assert_close(torch.tensor([o.embedding for o in out]),
                                   torch.tensor([w.embedding for w in want]))
    finally:
        asyncio.run(enc.shutdown())


# ---- token-id inputs must be what the tokenizer makes of a text -----------------------------


def test_token_ids_the_tokenizer_could_not_produce_are_refused(tiny_bert: Path) -> None:
    from engine.embedding import ForeignTokenIds

    enc = SentenceEncoder(str(tiny_bert))
    tid = enc.tokenizer.token_to_id
    cls, sep, pad = tid("[CLS]"), tid("[SEP]"), tid("[PAD]")
    cat, dog = tid("cat"), tid("dog")
    good = enc.tokenize(["cat and dog"])[0]
    assert enc.tokenize([good, [cls, sep], [cls, tid("[UNK]"), sep]])[0] == good
    cases = {
        "must start with [CLS]": [cat, dog, sep],
        "must end with [SEP]": [cls, cat, dog],
        "[PAD] (0) may only appear at the ends": [cls, cat, pad, dog, sep],
        "continues a word (##a": [cls, tid("##a"), sep],
        # c ##a ##t: pieces WordPiece never makes, since "cat" is a word of its own
        "decoded and encoded again": [cls, tid("c"), tid("##a"), tid("##t"), sep],
    }
    for reason, ids in cases.items():
        with pytest.raises(ForeignTokenIds, match=r"^input\[1\] holds token ids .*"
                           + re.escape(reason) + ".*Send the text instead"):
            enc.tokenize([good, ids])
    with pytest.raises(ForeignTokenIds, match="^input holds"):
        enc.embed([cat, sep])


def test_truncated_token_ids_keep_their_closing_sep(tiny_bert: Path) -> None:
    enc = SentenceEncoder(str(tiny_bert))
    ids = enc.tokenize(["cat " * 60], truncate=True)[0]  # the text's own truncation
    full = [ids[0]] + [enc.tokenizer.token_to_id("cat")] * 60 + [ids[-1]]
    assert enc.tokenize([full], truncate=True)[0] == ids


@pytest.mark.slow
def test_openai_tokenizer_ids_are_refused_by_minilm(minilm: Path) -> None:
    """langchain's OpenAIEmbeddings sends cl100k ids ("Hello world" is 9906, 1917 there):
    in MiniLM's range, but not its tokenizer's; MiniLM's own ids for it still work."""
    from engine.embedding import ForeignTokenIds

    enc = SentenceEncoder("all-minilm-l6-v2")
    with pytest.raises(ForeignTokenIds, match=r"must start with \[CLS\] \(101\)"):
        enc.embed([9906, 1917])
    own = enc.tokenize(["Hello world"])[0]
    assert own == [101, 7592, 2088, 102]
    assert enc.embed(own)[0].embedding == pytest.approx(enc.embed("Hello world")[0].embedding,
                                                        abs=1e-6)
