"""SentenceEncoder: a BERT sentence-embedding model (e.g. all-MiniLM-L6-v2) from an HF folder.

The folder holds config.json, model.safetensors and tokenizer.json, and, when it comes from
sentence-transformers, modules.json + 1_Pooling/config.json (pooling, Normalize) and
sentence_bert_config.json (max_seq_length). tokenizer.json's own padding and truncation
settings are switched off: batches are padded to their longest member here, and an input
over the model's length is an error unless the caller asks for truncation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from engine.config import parse_dtype
from engine.embedding.pooling import PoolingConfig, pool_padded
from engine.embedding.token_ids import TokenIdShape
from engine.json_file import read_json
from engine.model.bert import BertConfig, BertModel
from engine.model.checkpoint import resolve_model_path

EmbedInput = str | list[int]


@dataclass
class EmbeddingOutput:
    """One input's vector and the token ids the model saw (after any truncation)."""

    embedding: list[float]
    prompt_token_ids: list[int]


def check_token_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    if not ids:
        raise ValueError("input must not be empty")
    if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab_size for i in ids):
        raise ValueError(f"input token ids must be integers in [0, {vocab_size})")
    return list(ids)


def too_long(num_tokens: int, limit: int) -> ValueError:
    return ValueError(f"input has {num_tokens} tokens but the model's maximum input length is "
                      f"{limit} tokens; shorten it or ask for truncation")


class SentenceEncoder:
    """Texts -> pooled (normalised, if the model says so) vectors, batched with padding.

    `model` is a registered name (all-minilm-l6-v2) or an HF-style BERT folder.
    """

    def __init__(self, model: str | Path = "all-minilm-l6-v2", dtype: str = "float32",
                 device: str = "cpu", batch_size: int = 256,
                 max_batch_tokens: int = 2048) -> None:
        for name, value in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        folder = resolve_model_path(model)
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} is not an encoder folder: it has no config.json")
        self.path = folder
        self.config = BertConfig.from_hf_config(read_json(folder / "config.json"))
        self.pooling = PoolingConfig.from_folder(folder)
        self.device = torch.device(device)
        self.dtype = parse_dtype(dtype)
        self.batch_size = batch_size  # at most this many inputs per forward
        self.max_batch_tokens = max_batch_tokens  # ... and this many padded tokens
        self.max_len = self._max_len(folder)
        self.tokenizer = self._tokenizer(folder, truncate=False)
        self._truncating = self._tokenizer(folder, truncate=True)
        self.id_shape = TokenIdShape.of(self.tokenizer, self.config.pad_token_id)  # what token-id inputs must look like
        self.model = self._load_model(folder)

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    # ---- loading -------------------------------------------------------------------------

    def _max_len(self, folder: Path) -> int:
        """sentence-transformers' max_seq_length, else the tokenizer's, capped by positions."""
        limit = self.config.max_position_embeddings
        st = read_json(folder / "sentence_bert_config.json").get("max_seq_length")
        tok = read_json(folder / "tokenizer_config.json").get("model_max_length")
        for value in (st, tok):
            if isinstance(value, int) and 0 < value:
                return min(value, limit)
        return limit

    def _tokenizer(self, folder: Path, truncate: bool) -> Tokenizer:
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ValueError(f"{folder} has no tokenizer.json")
        tok = Tokenizer.from_file(str(path))
        tok.no_padding()
        tok.no_truncation()
        if truncate:  # keeps [CLS] ... [SEP] around what is left, as sentence-transformers does
            tok.enable_truncation(self.max_len)
        return tok

    def _load_model(self, folder: Path) -> BertModel:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise ValueError(f"{folder} has no *.safetensors weights")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            for name, tensor in load_file(str(f)).items():
                name = name.removeprefix("bert.")
                # The pooler head and the position-id buffer are not used by sentence vectors.
                if not name.startswith("pooler.") and name != "embeddings.position_ids":
                    state[name] = tensor
        with torch.device("meta"):
            model = BertModel(self.config)
        model.load_state_dict(state, strict=True, assign=True)
        return model.to(device=self.device, dtype=self.dtype).eval()

    # ---- encoding ------------------------------------------------------------------------

    def tokenize(self, inputs: Sequence[EmbedInput], truncate: bool = False) -> list[list[int]]:
        """Token ids per input, special tokens included; token-id inputs are taken as given
        when they are what the tokenizer makes of a text ([CLS] ... [SEP]).

        Raises ValueError for an empty input, bad ids, or one over max_len (unless truncate);
        ForeignTokenIds (a ValueError) for ids the tokenizer could not have produced.
        """
        out = []
        for n, item in enumerate(inputs):
            if isinstance(item, str):
                if not item:
                    raise ValueError("input must not be an empty string")
                tok = self._truncating if truncate else self.tokenizer
                ids = tok.encode_batch([item])[0].ids  # the batch call releases the GIL
            else:
                ids = check_token_ids(item, self.vocab_size)
                self.id_shape.check(ids, "input" if len(inputs) == 1 else f"input[{n}]")
                if truncate and len(ids) > self.max_len:  # keep the closing [SEP], as for text
                    suffix = self.id_shape.suffix
                    ids = ids[: self.max_len - len(suffix)] + suffix
            if len(ids) > self.max_len:
                raise too_long(len(ids), self.max_len)
            out.append(ids)
        return out

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of the text's tokens, special tokens excluded."""
        encoded = self.tokenizer.encode_batch([text], add_special_tokens=False)[0]
        return list(encoded.offsets)  # (the batch call releases the GIL: files can be long)

    def micro_batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Input indices grouped for one forward each: longest first, so that each group
        pads to a similar length, within batch_size inputs and max_batch_tokens padded
        tokens (padding is wasted work: this is ~2x faster than one padded batch of 256)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
        groups: list[list[int]] = []
        for i in order:
            group = groups[-1] if groups else None
            if (group is None or len(group) >= self.batch_size
                    or (len(group) + 1) * lengths[group[0]] > self.max_batch_tokens):
                groups.append([i])
            else:
                group.append(i)
        return groups

    @torch.inference_mode()
    def embed_token_ids(self, id_lists: Sequence[list[int]]) -> torch.Tensor:
        """[n, dim] float32 vectors, in input order."""
        out = torch.empty(len(id_lists), self.dim)
        for idx in self.micro_batches([len(ids) for ids in id_lists]):
            out[idx] = self._batch([id_lists[i] for i in idx]).cpu()
        return out

    def _batch(self, id_lists: list[list[int]]) -> torch.Tensor:
        width = max(len(ids) for ids in id_lists)
        pad = self.config.pad_token_id
        ids = torch.full((len(id_lists), width), pad, dtype=torch.long)
        mask = torch.zeros((len(id_lists), width), dtype=torch.long)
        for row, seq in enumerate(id_lists):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.model(ids, mask)
        return pool_padded(hidden, mask, self.pooling)

    def embed(self, inputs: EmbedInput | Sequence[EmbedInput],
              truncate: bool = False) -> list[EmbeddingOutput]:
        """Embed a text, a list of texts, token ids or a list of token-id lists."""
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]  # type: ignore[list-item]
        ids = self.tokenize(list(inputs), truncate)  # type: ignore[arg-type]
        vectors = self.embed_token_ids(ids)
        return [EmbeddingOutput(v.tolist(), i) for v, i in zip(vectors, ids, strict=True)]
