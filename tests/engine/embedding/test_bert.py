"""Our BERT encoder vs transformers' BertModel on a tiny random checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import SentenceEncoder
from engine.model.bert import BertConfig

TEXTS = ["the quick brown fox", "paris is the capital of france and a city on a river",
         "a", "music, guitar and piano!"]


def test_hidden_states_match_transformers_with_padding(tiny_bert: Path) -> None:
    from transformers import BertModel

    ref = BertModel.from_pretrained(tiny_bert).eval()
    ours = SentenceEncoder(str(tiny_bert))
    ids = ours.tokenize(TEXTS)
    width = max(map(len, ids))
    input_ids = torch.tensor([i + [0] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    with torch.no_grad():
        expected = ref(input_ids=input_ids, attention_mask=mask).last_hidden_state
        got = ours.model(input_ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


def test_token_types_change_the_states(tiny_bert: Path) -> None:
    from transformers import BertModel

    ref = BertModel.from_pretrained(tiny_bert).eval()
    ours = SentenceEncoder(str(tiny_bert))
    ids = torch.tensor([ours.tokenize(["cat dog tree"])[0]])
    mask = torch.ones_like(ids)
    types = torch.tensor([[0, 0, 1, 1, 1]])
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = ours.model(ids, mask, types)
        plain = ours.model(ids, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, plain)


def test_tokenizer_file_padding_and_truncation_are_switched_off(tiny_bert: Path) -> None:
    enc = SentenceEncoder(str(tiny_bert))
    # The saved tokenizer.json pads to 64; ours gives the bare [CLS] ... [SEP] ids.
    ids = enc.tokenize(["cat dog"])[0]
    assert len(ids) == 4 and ids[0] == enc.tokenizer.token_to_id("[CLS]")
    assert ids[-1] == enc.tokenizer.token_to_id("[SEP]")
    assert enc.max_len == 48  # sentence_bert_config.json's max_seq_length


def test_config_rejects_unsupported_shapes() -> None:
    base = {"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16}
    BertConfig.from_hf_config(base)
    with pytest.raises(ValueError, match="model_type"):
        BertConfig.from_hf_config({**base, "model_type": "roberta"})
    with pytest.raises(ValueError, match="position"):
        BertConfig.from_hf_config({**base, "position_embedding_type": "relative_key"})
    with pytest.raises(ValueError, match="multiple"):
        BertConfig.from_hf_config({**base, "num_attention_heads": 3})
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig.from_hf_config({**base, "hidden_act": "swish"})
