"""Token-id inputs of a BERT encoder: refused unless its own tokenizer could have made them.

A client that tokenizes for another model (langchain's OpenAI embeddings client sends
cl100k ids by default) passes ids that are in range yet mean nothing to this vocabulary: the
vectors come out silently wrong. What this tokenizer produces for a text is
`prefix + pieces + suffix` ([CLS] ... [SEP] for BERT), with no other special token among the
pieces ([UNK] aside) and, for WordPiece, a first piece that starts a word (not "##..."); and
its pieces give back the same ids when decoded and encoded again (which catches the rest,
such as BERT's never-produced [unused1]; it held for every text tried on MiniLM's tokenizer,
Unicode and accents included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer


class ForeignTokenIds(ValueError):
    """Token ids this encoder's tokenizer could not have produced."""


@dataclass(frozen=True)
class TokenIdShape:
    prefix: list[int]  # what the tokenizer puts before a text's pieces ([CLS])
    suffix: list[int]  # ... and after them ([SEP])
    inner_specials: frozenset[int]  # special ids that never appear among the pieces
    unk_id: int | None  # [UNK] stands for a whole word it cannot spell
    continuation: str | None  # WordPiece's "##": a text's first piece never starts with it
    tokenizer: Tokenizer

    @classmethod
    def of(cls, tokenizer: Tokenizer, pad_id: int | None = None) -> TokenIdShape:
        full = tokenizer.encode("a").ids
        plain = tokenizer.encode("a", add_special_tokens=False).ids
        at = next((i for i in range(len(full) - len(plain) + 1)
                   if full[i:i + len(plain)] == plain), 0)
        unk = getattr(tokenizer.model, "unk_token", None)
        unk_id = tokenizer.token_to_id(unk) if isinstance(unk, str) else None
        specials = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        specials |= {*full[:at], *full[at + len(plain):]}
        if pad_id is not None:
            specials.add(pad_id)
        specials.discard(unk_id)  # type: ignore[arg-type]
        prefix = getattr(tokenizer.model, "continuing_subword_prefix", None)
        return cls(full[:at], full[at + len(plain):], frozenset(specials), unk_id,
                   prefix if isinstance(prefix, str) and prefix else None, tokenizer)

    def _name(self, ids: Sequence[int]) -> str:
        return " ".join(f"{self.tokenizer.id_to_token(i)} ({i})" for i in ids)

    def _round_trips(self, body: Sequence[int]) -> bool:
        """Each run of pieces between [UNK]s (whole words) encodes its own decoded text."""
        runs: list[list[int]] = [[]]
        for i in body:
            if i == self.unk_id:
                runs.append([])
            else:
                runs[-1].append(i)
        for run in filter(None, runs):
            text = self.tokenizer.decode(run, skip_special_tokens=False)
            if self.tokenizer.encode(text, add_special_tokens=False).ids != run:
                return False
        return True

    def check(self, ids: Sequence[int], where: str) -> None:
        """ForeignTokenIds naming `where` (input / input[i]) unless `ids` has the shape."""
        reason = None
        p, s = len(self.prefix), len(self.suffix)
        if list(ids[:p]) != self.prefix or len(ids) < p + s:
            reason = f"they must start with {self._name(self.prefix)}"
        elif s and list(ids[-s:]) != self.suffix:
            reason = f"they must end with {self._name(self.suffix)}"
        else:
            body = ids[p:len(ids) - s]
            inner = [i for i in body if i in self.inner_specials]
            if inner:
                reason = (f"{self._name(inner[:1])} may only appear at the ends, not among "
                          "the text's tokens")
            elif body and self.continuation and (
                    self.tokenizer.id_to_token(body[0]) or "").startswith(self.continuation):
                reason = (f"the first token after {self._name(self.prefix)} continues a "
                          f"word ({self._name(body[:1])})")
            elif not self._round_trips(body):
                reason = "decoded and encoded again, they give other ids"
        if reason is not None:
            raise ForeignTokenIds(f"{where} holds token ids this model's tokenizer could not "
                                  f"have produced: {reason}. Send the text instead")
