"""Per-sequence grammar state and the batched token masks built from it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import xgrammar as xgr

from engine.guided.repeat_guard import RepeatGuard


class GrammarState:
    """One sequence's position in its grammar (an xgrammar GrammarMatcher), and its repeat
    guard when the spec has one.

    Each sample of a request (n > 1) has its own: they share the compiled grammar, not the
    state. Preemption does not touch it: a recomputed sequence keeps its output tokens, and
    this state is a function of exactly those tokens.
    """

    def __init__(self, compiled: xgr.CompiledGrammar, guard: RepeatGuard | None = None,
                 token_bytes: Sequence[bytes] | None = None) -> None:
        self._matcher = xgr.GrammarMatcher(compiled)
        self.vocab_size = compiled.tokenizer_info.vocab_size
        self.num_accepted = 0
        self._guard = guard
        self._token_bytes = token_bytes

    def accept(self, token_id: int) -> bool:
        """Advance by one sampled token; False if the grammar does not allow it."""
        ok = self._matcher.accept_token(int(token_id))
        self.num_accepted += ok
        if ok and self._guard is not None and self._token_bytes is not None \
                and token_id < len(self._token_bytes):
            self._guard.feed(self._token_bytes[token_id])
        return ok

    @property
    def terminated(self) -> bool:
        """The grammar accepted a stop token: nothing may follow."""
        return self._matcher.is_terminated()

    @property
    def repeated(self) -> bool:
        """The repeat guard saw an object written twice: the output ends here."""
        return self._guard is not None and self._guard.repeated

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        self._matcher.fill_next_token_bitmask(bitmask, row)


def apply_grammar_masks(logits: torch.Tensor, states: Sequence[GrammarState | None]) -> None:
    """Set to -inf, in place, every logit a row's grammar forbids; rows without a grammar
    (None) are untouched. The bitmask is filled on the CPU (xgrammar's matchers live there)
    and applied on the logits' device."""
    rows = [i for i, s in enumerate(states) if s is not None]
    if not rows:
        return
    vocab = logits.shape[1]
    bitmask = xgr.allocate_token_bitmask(len(states), vocab)
    for i in rows:
        states[i].fill(bitmask, i)  # type: ignore[union-attr]
    xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), vocab_size=vocab,
                                    indices=rows)
