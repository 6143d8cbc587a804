"""EngineCore: one synchronous step = schedule -> one batched forward -> sample -> update.

Both the offline LLM and the AsyncEngine drive this same object.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import time
from dataclasses import dataclass

import torch

import kernels
from engine.block_manager import BlockManager
from engine.config import EngineConfig, parse_dtype
from engine.detokenizer import IncrementalDetokenizer
from engine.guided.backend import GrammarBackend
from engine.guided.matcher import GrammarState
from engine.kv_budget import num_kv_blocks
from engine.model.backend import select_ops, uses_cuda_graphs
from engine.model.fp8 import Fp8Linear
from engine.model.loader import load_model
from engine.model_runner import ModelRunner, SequenceChunk
from engine.outputs import CompletionOutput, Logprob, PositionLogprobs, RequestOutput
from engine.request import Request, Sequence, SequenceStatus
from engine.sampler import Sampler, SamplingMetadata, TokenLogprobs
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput

logger = logging.getLogger(__name__)


def parse_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a valid torch device") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return dev


@dataclass
class EngineStats:
    """Counters tests and metrics read: what the engine actually computed."""

    steps: int = 0
    computed_tokens: int = 0  # tokens run through the model (prompt chunks, recomputes, decodes)
    cached_prompt_tokens: int = 0  # prompt tokens served by the prefix cache
    generated_tokens: int = 0


class EngineCore:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.device = parse_device(config.device)
        dtype = parse_dtype(config.dtype)
        ops = select_ops(config.kernel_backend, self.device)
        self.kernels_kind = "triton" if ops is not kernels.reference_ops else "torch"
        loaded = load_model(config.model, dtype, self.device, ops,
                            quantization=config.quantization, load_format=config.load_format)
        self.model_config = loaded.config
        self.weights_kind = "fp8" if any(
            isinstance(m, Fp8Linear) for m in loaded.model.modules()) else config.dtype
        self.tokenizer = loaded.tokenizer
        self.eos_token_ids = loaded.eos_token_ids
        limit = loaded.config.max_position_embeddings
        if config.max_model_len is not None and config.max_model_len > limit:
            raise ValueError(f"max_model_len {config.max_model_len} exceeds the model's context {limit}")
        self.max_model_len = config.max_model_len or limit
        num_blocks = num_kv_blocks(loaded.config, config, self.max_model_len, self.device, dtype)
        self.runner = ModelRunner(
            loaded.model, num_blocks, config.block_size, self.device,
            cuda_graphs=uses_cuda_graphs(ops, self.device, config.enforce_eager),
            graph_batch=config.max_num_seqs, max_model_len=self.max_model_len,
        )
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(self.max_model_len, config.max_num_seqs,
                            config.max_num_batched_tokens, config.enable_chunked_prefill),
            self.block_manager,
        )
        self.sampler = Sampler(config.seed)
        self._seeds = random.Random(config.seed)  # per-sequence streams of unseeded requests
        self.requests: dict[str, Request] = {}
        self._seq_ids = itertools.count()
        self.stats = EngineStats()
        self._grammars: GrammarBackend | None = None  # built on the first guided request

    # ---- requests ------------------------------------------------------------------------

    def check_prompt(self, prompt_ids: list[int]) -> None:
        if not prompt_ids:
            raise ValueError("prompt must not be empty")
        vocab = self.model_config.vocab_size
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab for i in prompt_ids):
            raise ValueError(f"prompt token ids must be integers in [0, {vocab})")
        if len(prompt_ids) >= self.max_model_len:
            raise ValueError(
                f"prompt has {len(prompt_ids)} tokens but the model's context is {self.max_model_len}"
            )
        self.scheduler.check_fits(len(prompt_ids))

    @property
    def grammars(self) -> GrammarBackend:
        """The grammar compiler and its cache, made on first use (the vocabulary walk
        costs a moment on a large tokenizer)."""
        if self._grammars is None:
            self._grammars = GrammarBackend(self.tokenizer, self.eos_token_ids,
                                            self.model_config.vocab_size)
        return self._grammars

    def check_guided(self, params: SamplingParams) -> None:
        """Compile (and cache) the request's grammar; ValueError if it cannot be."""
        if params.guided is not None:
            self.grammars.compile(params.guided)

    def add_request(
        self, request_id: str, prompt_ids: list[int], params: SamplingParams,
        prompt: str | None = None,
    ) -> Request:
        if request_id in self.requests:
            raise ValueError(f"request_id {request_id!r} is already in use")
        self.check_prompt(prompt_ids)
        params.check_vocab(self.model_config.vocab_size)
        compiled = self.grammars.compile(params.guided) if params.guided is not None else None
        hide_logprobs = False
        if (params.best_of or params.n) > params.n and params.logprobs is None:
            # Ranking samples by cumulative log-probability needs the chosen tokens' logprobs.
            params, hide_logprobs = dataclasses.replace(params, logprobs=0), True
        req = Request(request_id, prompt, list(prompt_ids), params, arrival=time.monotonic(),
                      hide_logprobs=hide_logprobs)
        for i in range(req.num_samples):
            seed = params.seed + i if params.seed is not None else self._seeds.getrandbits(63)
            seq = Sequence(next(self._seq_ids), req, i)
            seq.generator = torch.Generator(device="cpu").manual_seed(seed)
            seq.detokenizer = IncrementalDetokenizer(
                self.tokenizer, prompt_ids, skip_special_tokens=params.skip_special_tokens,
                stop=params.stop, include_stop_str_in_output=params.include_stop_str_in_output,
            )
            seq.logprobs = [] if params.logprobs is not None else None
            seq.grammar = GrammarState(compiled) if compiled is not None else None
            req.seqs.append(seq)
        self.scheduler.add_request(req)
        self.requests[request_id] = req
        return req

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """End a request at any stage; its blocks go back to the pool."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return None
        self.scheduler.abort_seqs(req.seqs)
        for seq in req.seqs:
            seq.grammar = None
        return self._request_output(req)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    # ---- one step ------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one iteration; outputs of every request that advanced (finished ones too)."""
        sched = self.scheduler.schedule()
        dropped = {seq.request for seq in sched.dropped}
        if not sched.scheduled:
            return self._outputs(dropped)
        self.runner.copy_blocks(sched.blocks_to_copy)
        chunks = [
            SequenceChunk(
                s.seq.all_token_ids[s.start_pos : s.start_pos + s.num_new_tokens],
                s.start_pos, s.seq.block_table,
            )
            for s in sched.scheduled
        ]
        logits = self.runner.execute(chunks)
        sampled, logprobs = self._sample(sched, logits)
        updated = self.scheduler.update_from_output(sched, sampled, self.eos_token_ids)
        self.stats.steps += 1
        self.stats.computed_tokens += sched.num_batched_tokens
        self.stats.generated_tokens += len(updated)
        for seq in updated:
            self._after_token(seq, logprobs.get(seq))
        return self._outputs({seq.request for seq in updated} | dropped)

    def _sample(
        self, sched: SchedulerOutput, logits: torch.Tensor
    ) -> tuple[dict[Sequence, list[int]], dict[Sequence, TokenLogprobs | None]]:
        """One sampler row per sequence that reached its last token; a request's first
        prompt gets a row per sample (they share its logits and fork)."""
        rows: list[int] = []
        seqs: list[Sequence] = []
        for i, item in enumerate(sched.scheduled):
            if not item.completes:
                continue
            req = item.seq.request
            group = req.seqs if not req.forked else [item.seq]
            rows.extend([i] * len(group))
            seqs.extend(group)
        if not seqs:
            return {}, {}
        grammars = [s.grammar for s in seqs]
        meta = SamplingMetadata(
            [s.params for s in seqs], [s.prompt_token_ids for s in seqs],
            [s.output_token_ids for s in seqs], [s.generator for s in seqs], self.eos_token_ids,
            grammars if any(g is not None for g in grammars) else None,
        )
        out = self.sampler(logits[torch.tensor(rows, device=logits.device)], meta)
        sampled: dict[Sequence, list[int]] = {}
        for seq, token in zip(seqs, out.token_ids, strict=True):
            leader = seq.request.seqs[0] if not seq.request.forked else seq
            sampled.setdefault(leader, []).append(token)
        return sampled, dict(zip(seqs, out.logprobs, strict=True))

    def _after_token(self, seq: Sequence, entry: TokenLogprobs | None) -> None:
        """Logprobs, detokenization and stop strings for a freshly appended token."""
        if entry is not None:
            seq.cumulative_logprob += entry.logprob
            if seq.logprobs is not None:
                seq.logprobs.append(self._logprobs(entry))
        if seq.grammar is not None:
            self._advance_grammar(seq)
        if seq.status == SequenceStatus.FINISHED_STOPPED:
            return  # EOS or a stop token id: its text never reaches the output
        detok: IncrementalDetokenizer = seq.detokenizer
        detok.step([seq.output_token_ids[-1]])
        if detok.finished and detok.stop_reason is not None:
            if seq.status.finished:  # the same token hit max_tokens: the stop string wins
                seq.finish(SequenceStatus.FINISHED_STOPPED, detok.stop_reason)
            else:
                self.scheduler.finish(seq, SequenceStatus.FINISHED_STOPPED, detok.stop_reason)

    def _advance_grammar(self, seq: Sequence) -> None:
        """Feed the new token to the sequence's grammar; a terminated grammar ends it."""
        token = seq.output_token_ids[-1]
        if not seq.grammar.accept(token):
            # The mask forbade this token, so this is a bug, not the client's: end cleanly.
            logger.error("request %s: grammar rejected token %d", seq.request.request_id, token)
            self.scheduler.finish(seq, SequenceStatus.FINISHED_STOPPED)
        elif seq.grammar.terminated:
            self.scheduler.finish(seq, SequenceStatus.FINISHED_STOPPED)
        if seq.status.finished:
            seq.grammar = None

    # ---- outputs -------------------------------------------------------------------------

    def _outputs(self, requests: set[Request]) -> list[RequestOutput]:
        outputs = []
        for req in sorted(requests, key=lambda r: r.arrival):
            out = self._request_output(req)
            if out is not None:
                outputs.append(out)
            if req.finished:
                for seq in req.seqs:
                    seq.grammar = None
                self.requests.pop(req.request_id, None)
                self.stats.cached_prompt_tokens += req.num_cached_tokens
        return outputs

    def _request_output(self, req: Request) -> RequestOutput | None:
        params = req.params
        seqs = req.seqs
        if req.num_samples > params.n:  # best_of: only the n most likely, once all are done
            if not req.finished:
                return None
            seqs = sorted(seqs, key=lambda s: s.cumulative_logprob, reverse=True)[: params.n]
        show = params.logprobs is not None and not req.hide_logprobs
        completions = [
            CompletionOutput(
                index=i, text=s.detokenizer.output_text, token_ids=list(s.output_token_ids),
                finish_reason=s.status.finish_reason, stop_reason=s.stop_reason,
                logprobs=list(s.logprobs) if show and s.logprobs is not None else None,
                cumulative_logprob=s.cumulative_logprob if show else None,
            )
            for i, s in enumerate(seqs)
        ]
        return RequestOutput(
            req.request_id, req.prompt, req.prompt_token_ids, completions,
            finished=req.finished, num_cached_tokens=req.num_cached_tokens,
        )

    def _logprobs(self, entry: TokenLogprobs) -> PositionLogprobs:
        tok = self.tokenizer

        def make(token_id: int, logprob: float) -> Logprob:
            return Logprob(token_id, tok.decode([token_id]), logprob, tok.token_bytes(token_id))

        return PositionLogprobs(make(entry.token_id, entry.logprob), [make(*t) for t in entry.top])
