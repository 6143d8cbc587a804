"""Per-sequence grammar state and the batched token masks built from it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import xgrammar as xgr


class GrammarState:
    """One sequence's position in its grammar (an xgrammar GrammarMatcher).

    Each sample of a request (n > 1) has its own: they share the compiled grammar, not the
    state. Preemption does not touch it: a recomputed sequence keeps its output tokens, and
    this state is a function of exactly those tokens.
    """

    def __init__(self, compiled: xgr.CompiledGrammar) -> None:
        self._matcher = xgr.GrammarMatcher(compiled)
        self.vocab_size = compiled.tokenizer_info.vocab_size
        self.num_accepted = 0

    def accept(self, token_id: int) -> bool:
        """Advance by one sampled token; False if the grammar does not allow it."""
        ok = self._matcher.accept_token(int(token_id))
        self.num_accepted += ok
        return ok

    @property
    def terminated(self) -> bool:
        """The grammar accepted a stop token: nothing may follow."""
        return self._matcher.is_terminated()

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
