"""Verification of speculative draft tokens: which drafts a sequence keeps, and its next token.

A sequence with drafts x_1..x_d has d + 1 logits rows from one forward: row j is the
model's distribution for the token after x_1..x_j. Each row goes through the same
processing as the sampler's (logit_bias, min_tokens, penalties, temperature, top_k, top_p,
min_p), with the output as it would be had x_1..x_j been accepted, so penalties and
min_tokens stay exact.

- greedy rows: keep the longest run of drafts equal to the argmax, then the argmax at the
  first mismatch (or after the last draft): exactly the tokens greedy decoding would make;
- sampled rows (speculative sampling with a one-hot draft): x_j is kept with probability
  p_j(x_j); at the first rejection the token is drawn from p_j without x_j, renormalized
  (max(p - q, 0) for q one-hot on x_j); if all are kept, one more is drawn from the last
  row. Every token then has exactly the distribution plain sampling would give it.

Draws use the sequence's own generator (uniforms for the accept tests, then the sampler's
exponential race), so a seeded request is reproducible; its tokens differ from those of
the same seed without speculation (the same distribution, another draw).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.sampling_params import SamplingParams
from engine.worker.sampler import (
    SamplingMetadata,
    TokenLogprobs,
    apply_penalties,
    filter_logits,
    gather_logprobs,
    is_greedy,
)


@dataclass
class DraftCheck:
    """One sequence to verify: its drafts and where its d + 1 logits rows start."""

    params: SamplingParams
    prompt_ids: Sequence[int]
    # The output as each of its d + 1 rows sees it: the output so far, then with x_1..x_j.
    row_outputs: list[Sequence[int]]
    generator: torch.Generator | None
    draft_token_ids: list[int]
    first_row: int


@dataclass
class Verified:
    token_ids: list[int]  # accepted drafts, then the model's own token
    logprobs: list[TokenLogprobs] | None  # one per token, when the request asks


def accept_greedy(targets: list[int], drafts: list[int]) -> list[int]:
    """targets[j]: the argmax after j accepted drafts (len(drafts) + 1 of them)."""
    out: list[int] = []
    for j, target in enumerate(targets):
        out.append(target)
        if j == len(drafts) or target != drafts[j]:
            break
    return out


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token with probability proportional to `weights` (the exponential race)."""
    q = torch.empty(weights.shape[0], dtype=torch.float32)
    q.exponential_(generator=generator)
    q.clamp_(min=torch.finfo(torch.float32).tiny)
    return int((weights.float().cpu() / q).argmax())


def accept_sampled(probs: torch.Tensor, drafts: list[int],
                   generator: torch.Generator | None) -> list[int]:
    """probs [d + 1, V]: the target distribution of each row (after every processor)."""
    d = len(drafts)
    if d:
        probs = probs.cpu()
        p_draft = probs[torch.arange(d), torch.tensor(drafts)]
        u = torch.rand(d, generator=generator)
        kept = (u < p_draft).tolist()
        for j, keep in enumerate(kept):
            if keep:
                continue
            residual = probs[j].clone()
            residual[drafts[j]] = 0.0
            if float(residual.sum()) <= 0.0:  # all of the mass was on the draft (rounding)
                continue
            return drafts[:j] + [_draw(residual, generator)]
    return drafts + [_draw(probs[d], generator)]


def verify_drafts(logits: torch.Tensor, checks: list[DraftCheck],
                  eos_token_ids: frozenset[int]) -> list[Verified]:
    """Verify every check against its rows of `logits` (the forward's float32 logits)."""
    rows: list[int] = []
    params: list[SamplingParams] = []
    outputs: list[Sequence[int]] = []
    prompts: list[Sequence[int]] = []
    for c in checks:
        if len(c.row_outputs) != len(c.draft_token_ids) + 1:
            raise ValueError("a draft check needs one row output per draft, plus one")
        for j, output in enumerate(c.row_outputs):
            rows.append(c.first_row + j)
            params.append(c.params)
            prompts.append(c.prompt_ids)
            outputs.append(output)
    picked = logits[torch.tensor(rows, device=logits.device)]
    meta = SamplingMetadata(params, prompts, outputs, [None] * len(rows), eos_token_ids)
    raw = None
    if any(p.logprobs is not None for p in params):
        raw = torch.log_softmax(picked.float(), dim=1)
    processed = apply_penalties(picked, meta)
    targets = processed.argmax(dim=1).tolist()
    sampled_rows = [i for i, p in enumerate(params) if not is_greedy(p)]
    probs: dict[int, torch.Tensor] = {}
    if sampled_rows:
        filtered = filter_logits(processed[sampled_rows], [params[i] for i in sampled_rows])
        probs = dict(zip(sampled_rows, filtered.softmax(dim=1).unbind(0), strict=True))
    results: list[Verified] = []
    emitted_rows: list[int] = []
    emitted_tokens: list[int] = []
    base = 0
    for c in checks:
        n = len(c.draft_token_ids) + 1
        if is_greedy(c.params):
            tokens = accept_greedy(targets[base : base + n], c.draft_token_ids)
        else:
            rows_probs = torch.stack([probs[base + j] for j in range(n)])
            tokens = accept_sampled(rows_probs, c.draft_token_ids, c.generator)
        results.append(Verified(tokens, None))
        emitted_rows.extend(range(base, base + len(tokens)))
        emitted_tokens.extend(tokens)
        base += n
    if raw is not None:
        entries = gather_logprobs(raw[emitted_rows], emitted_tokens,
                                  [params[i] for i in emitted_rows])
        at = 0
        for result in results:
            n = len(result.token_ids)
            if entries[at] is not None:
                result.logprobs = entries[at : at + n]  # type: ignore[assignment]
            at += n
    return results
