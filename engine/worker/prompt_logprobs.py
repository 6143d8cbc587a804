"""Prompt log-probabilities: for each prompt position a chunk computes, the logprob of the
prompt token that follows it, its rank and the k most likely tokens there.

Rows go through the LM head a slice at a time, so a long prompt chunk never holds
[chunk_len, vocab] float32 logits at once (only [ROWS_PER_SLICE, vocab]).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.worker.sampler import TokenLogprobs

ROWS_PER_SLICE = 256


def prompt_logprobs(compute_logits: Callable[[torch.Tensor], torch.Tensor],
                    hidden: torch.Tensor, targets: list[int], k: int,
                    rows_per_slice: int = ROWS_PER_SLICE) -> list[TokenLogprobs]:
    """`hidden` holds one row per position, `targets[i]` the token after position i (as
    many targets as rows); raw log_softmax of the float32 logits, as for sampled logprobs."""
    out: list[TokenLogprobs] = []
    for start in range(0, len(targets), rows_per_slice):
        rows = hidden[start : start + rows_per_slice]
        logprobs = torch.log_softmax(compute_logits(rows).float(), dim=-1)
        tgt = torch.tensor(targets[start : start + rows_per_slice], device=logprobs.device)
        chosen = logprobs.gather(1, tgt[:, None])[:, 0]
        ranks = (logprobs > chosen[:, None]).sum(dim=1) + 1
        top_vals, top_ids = logprobs.topk(k, dim=1) if k else (None, None)
        chosen_l, ranks_l = chosen.tolist(), ranks.tolist()
        vals_l = top_vals.tolist() if top_vals is not None else None
        ids_l = top_ids.tolist() if top_ids is not None else None
        for i, token in enumerate(targets[start : start + rows_per_slice]):
            top = list(zip(ids_l[i], vals_l[i], strict=True)) if ids_l is not None else []
            out.append(TokenLogprobs(token, chosen_l[i], top, ranks_l[i]))
    return out
