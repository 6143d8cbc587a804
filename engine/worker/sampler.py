"""Batched sampling: one call picks the next token of every row, each with its own params.

Order of processing (each step is skipped when no row in the batch needs it):

1. logprobs: log_softmax of the model's raw float32 logits, before any transform, as vLLM v1
   reports them by default;
2. logit_bias: added to the logits;
3. min_tokens: while a row has produced fewer than min_tokens tokens, its EOS ids and
   stop_token_ids get -inf;
4. repetition_penalty (HF/CTRL style) over prompt + output tokens: positive logits are
   divided by the penalty, negative ones multiplied;
5. presence/frequency penalties (OpenAI style) over output tokens only:
   logit -= presence * (count > 0) + frequency * count;
6. grammar masks (guided decoding): every token a row's grammar forbids gets -inf. Rows
   without a grammar are untouched; the raw logprobs of step 1 are not masked (the model's
   own distribution, as vLLM reports it too);
7. greedy rows take the argmax;
8. sampled rows: temperature, top_k (keep logits >= the k-th largest), top_p (smallest set
   of most likely tokens whose mass reaches p, at least one token), min_p (drop tokens whose
   probability is below min_p * the largest probability), then one draw.

The draw uses the exponential race, argmax(probs / q) with q ~ Exp(1), which samples exactly
from probs. Each seeded row draws its q from its own generator, so its tokens do not depend
on what else shares the batch. `ignore_eos` is the scheduler's business, not the sampler's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from engine.sampling_params import SamplingParams

if TYPE_CHECKING:  # xgrammar is imported on the first guided batch only
    from engine.guided.matcher import GrammarState

# Below this temperature the scaled logits can overflow float32; such rows are greedy.
MIN_TEMPERATURE = 1e-5


@dataclass
class SamplingMetadata:
    """Everything the sampler needs about the batch, built by the caller once per step."""

    params: list[SamplingParams]
    prompt_ids: list[Sequence[int]]
    output_ids: list[Sequence[int]]
    generators: list[torch.Generator | None]
    eos_token_ids: frozenset[int]
    # One entry per row: the sequence's grammar state, or None. None for the whole batch
    # when no row is guided.
    grammars: list[GrammarState | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.params)
        for name in ("prompt_ids", "output_ids", "generators", "grammars"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise ValueError(
                    f"{name} must have one entry per row ({n}), got {len(getattr(self, name))}"
                )


@dataclass
class TokenLogprobs:
    """The chosen token's logprob and the `logprobs` most likely alternatives, best first."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]
    rank: int | None = None  # the token's rank among all (1 = most likely); prompt logprobs only


@dataclass
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[TokenLogprobs | None]


def _row_values(meta: SamplingMetadata, field: str, device: torch.device) -> torch.Tensor:
    values = [float(getattr(p, field)) for p in meta.params]
    return torch.tensor(values, dtype=torch.float32, device=device)


def _scatter_ids(
    rows: list[Sequence[int]], shape: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """Count how often each token id occurs in each row: a [B, V] float32 tensor."""
    counts = torch.zeros(shape, dtype=torch.float32, device=device)
    lengths = [len(r) for r in rows]
    if sum(lengths) == 0:
        return counts
    flat = torch.tensor([t for r in rows for t in r], dtype=torch.long, device=device)
    row_idx = torch.repeat_interleave(
        torch.arange(len(rows), device=device), torch.tensor(lengths, device=device)
    )
    keep = (flat >= 0) & (flat < shape[1])  # ids the caller failed to validate are ignored
    ones = torch.ones(int(keep.sum()), dtype=torch.float32, device=device)
    return counts.index_put_((row_idx[keep], flat[keep]), ones, accumulate=True)


def apply_logit_bias(logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
    rows, cols, vals = [], [], []
    for i, p in enumerate(meta.params):
        for tok, bias in (p.logit_bias or {}).items():
            if tok < logits.shape[1]:
                rows.append(i)
                cols.append(tok)
                vals.append(bias)
    if rows:
        dev = logits.device
        index = (torch.tensor(rows, device=dev), torch.tensor(cols, device=dev))
        logits.index_put_(index, torch.tensor(vals, device=dev), accumulate=True)
    return logits


def apply_min_tokens(logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
    banned: list[Sequence[int]] = []
    for p, out in zip(meta.params, meta.output_ids):
        too_short = len(out) < p.min_tokens
        banned.append(sorted(meta.eos_token_ids | set(p.stop_token_ids or ())) if too_short else [])
    if any(banned):
        mask = _scatter_ids(banned, tuple(logits.shape), logits.device) > 0
        logits.masked_fill_(mask, float("-inf"))
    return logits


def apply_repetition_penalty(logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
    needed = [p.repetition_penalty != 1.0 for p in meta.params]
    if not any(needed):
        return logits
    seen_rows = [
        list(prompt) + list(out) if need else []
        for need, prompt, out in zip(needed, meta.prompt_ids, meta.output_ids)
    ]
    seen = _scatter_ids(seen_rows, tuple(logits.shape), logits.device) > 0
    penalty = _row_values(meta, "repetition_penalty", logits.device).unsqueeze(1)
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def apply_presence_frequency(logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
    needed = [p.presence_penalty != 0.0 or p.frequency_penalty != 0.0 for p in meta.params]
    if not any(needed):
        return logits
    out_rows = [list(out) if need else [] for need, out in zip(needed, meta.output_ids)]
    counts = _scatter_ids(out_rows, tuple(logits.shape), logits.device)
    presence = _row_values(meta, "presence_penalty", logits.device).unsqueeze(1)
    frequency = _row_values(meta, "frequency_penalty", logits.device).unsqueeze(1)
    return logits - presence * (counts > 0) - frequency * counts


def apply_penalties(logits: torch.Tensor, meta: SamplingMetadata) -> torch.Tensor:
    """Steps 2-5 on a copy of `logits`; the caller's tensor is left untouched."""
    logits = logits.to(torch.float32, copy=True)
    logits = apply_logit_bias(logits, meta)
    logits = apply_min_tokens(logits, meta)
    logits = apply_repetition_penalty(logits, meta)
    return apply_presence_frequency(logits, meta)


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """top_k: [B] long, 0 = disabled. Ties with the k-th largest logit are kept."""
    vocab = logits.shape[1]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), torch.full_like(top_k, vocab))
    sorted_desc = logits.sort(dim=1, descending=True).values
    kth = sorted_desc.gather(1, (k - 1).unsqueeze(1))
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """top_p: [B] float. A token survives if the mass of the tokens ranked above it is < p."""
    probs, order = logits.softmax(dim=1).sort(dim=1, descending=True)
    mass_before = probs.cumsum(dim=1) - probs
    # p == 1 keeps everything, even where rounding pushes the running sum past 1.
    drop_sorted = (mass_before >= top_p.unsqueeze(1)) & (top_p < 1.0).unsqueeze(1)
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """min_p: [B] float. Drop tokens less likely than min_p times the most likely one."""
    probs = logits.softmax(dim=1)
    threshold = probs.max(dim=1, keepdim=True).values * min_p.unsqueeze(1)
    return logits.masked_fill(probs < threshold, float("-inf"))


def filter_logits(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Step 7 before the draw: temperature, top_k, top_p, min_p for rows that sample."""
    dev = logits.device
    temps = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=dev)
    logits = logits / temps.unsqueeze(1)
    if any(p.top_k > 0 for p in params):
        logits = apply_top_k(logits, torch.tensor([p.top_k for p in params], device=dev))
    if any(p.top_p < 1.0 for p in params):
        top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=dev)
        logits = apply_top_p(logits, top_p)
    if any(p.min_p > 0.0 for p in params):
        min_p = torch.tensor([p.min_p for p in params], dtype=torch.float32, device=dev)
        logits = apply_min_p(logits, min_p)
    return logits


def is_greedy(p: SamplingParams) -> bool:
    return p.greedy or p.temperature < MIN_TEMPERATURE


class Sampler:
    """Turns a step's logits [B, V] into one token per row (see the module doc for order)."""

    def __init__(self, seed: int | None = None) -> None:
        self._seed = seed
        self._shared: dict[torch.device, torch.Generator] = {}

    def _shared_generator(self, device: torch.device) -> torch.Generator:
        # Unseeded requests share one generator per device; made lazily so the sampler
        # need not know the device up front.
        if device not in self._shared:
            gen = torch.Generator(device=device)
            if self._seed is None:
                gen.seed()
            else:
                gen.manual_seed(self._seed)
            self._shared[device] = gen
        return self._shared[device]

    def __call__(self, logits: torch.Tensor, meta: SamplingMetadata) -> SamplerOutput:
        if logits.dim() != 2 or logits.shape[0] != len(meta.params):
            raise ValueError(
                f"logits must be [batch={len(meta.params)}, vocab], got {tuple(logits.shape)}"
            )
        raw_logprobs = None
        if any(p.logprobs is not None for p in meta.params):
            raw_logprobs = torch.log_softmax(logits.float(), dim=1)
        processed = apply_penalties(logits, meta)
        if meta.grammars is not None:
            # Imported here: xgrammar belongs to guided decoding only (the GPU image lacks it).
            from engine.guided.matcher import apply_grammar_masks

            apply_grammar_masks(processed, meta.grammars)
        tokens = processed.argmax(dim=1)
        sampled = [i for i, p in enumerate(meta.params) if not is_greedy(p)]
        if sampled:
            tokens[sampled] = self._sample(processed[sampled], meta, sampled)
        token_ids = tokens.tolist()
        return SamplerOutput(token_ids, gather_logprobs(raw_logprobs, token_ids, meta.params))

    def _sample(
        self, logits: torch.Tensor, meta: SamplingMetadata, rows: list[int]
    ) -> torch.Tensor:
        probs = filter_logits(logits, [meta.params[i] for i in rows]).softmax(dim=1)
        q = self._exponential_noise(probs.shape, probs.device, [meta.generators[i] for i in rows])
        return (probs / q).argmax(dim=1)

    def _exponential_noise(
        self,
        shape: torch.Size,
        device: torch.device,
        generators: list[torch.Generator | None],
    ) -> torch.Tensor:
        q = torch.empty(shape, dtype=torch.float32, device=device)
        shared_rows = [i for i, g in enumerate(generators) if g is None]
        if shared_rows:
            noise = torch.empty((len(shared_rows), shape[1]), device=device)
            q[shared_rows] = noise.exponential_(generator=self._shared_generator(device))
        for i, gen in enumerate(generators):
            if gen is not None:
                row = torch.empty(shape[1], dtype=torch.float32, device=gen.device)
                q[i] = row.exponential_(generator=gen).to(device)
        # Exp(1) can round to 0; a zero would turn a zero-probability token into nan/inf.
        return q.clamp_(min=torch.finfo(torch.float32).tiny)


def gather_logprobs(
    raw: torch.Tensor | None, token_ids: list[int], params: list[SamplingParams]
) -> list[TokenLogprobs | None]:
    """Per row of `raw` (log_softmax of the raw logits): the chosen token's logprob and the
    row's `logprobs` most likely alternatives, for rows that asked."""
    if raw is None:
        return [None] * len(token_ids)
    k = max(p.logprobs or 0 for p in params)
    top_vals, top_ids = raw.topk(k, dim=1) if k > 0 else (raw[:, :0], raw[:, :0].long())
    chosen = raw.gather(1, torch.tensor(token_ids, device=raw.device).unsqueeze(1))
    chosen_l, vals_l, ids_l = chosen.squeeze(1).tolist(), top_vals.tolist(), top_ids.tolist()
    out: list[TokenLogprobs | None] = []
    for i, (p, tok) in enumerate(zip(params, token_ids)):
        if p.logprobs is None:
            out.append(None)
            continue
        top = list(zip(ids_l[i][: p.logprobs], vals_l[i][: p.logprobs]))
        out.append(TokenLogprobs(tok, chosen_l[i], top))
    return out
