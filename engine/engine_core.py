"""EngineCore: one synchronous step = schedule -> one batched forward -> sample -> update.

It deals in token ids only: each step reports, per sequence, what is new (SequenceUpdate).
Text, stop strings and the shape of outputs belong to the OutputProcessor; LLMEngine
drives the two together for both the offline LLM and the AsyncEngine.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

import kernels
from engine.config import EngineConfig
from engine.core.block_manager import BlockManager
from engine.core.request import Request, SequenceState, SequenceStatus, TokenView
from engine.core.scheduler import ScheduledSequence, Scheduler, SchedulerConfig, SchedulerOutput
from engine.embedding.decoder_pooling import embed_with_decoder, tokenize_for_decoder
from engine.embedding.pooling import PoolingConfig
from engine.embedding.sentence_encoder import EmbedInput
from engine.errors import InvalidRequest
from engine.model.fp8 import Fp8Linear
from engine.sampling_params import SamplingParams
from engine.worker.model_runner import SequenceChunk
from engine.worker.sampler import Sampler, SamplingMetadata, TokenLogprobs
from engine.worker.setup import parse_device, setup_rank
from engine.worker.spec_verify import DraftCheck, verify_drafts

if TYPE_CHECKING:  # xgrammar is imported on the first guided request only
    from xgrammar import CompiledGrammar

    from engine.guided import GuidedDecoding
    from engine.guided.compiler import GrammarBackend
    from engine.parallel.driver import TPDriver

logger = logging.getLogger(__name__)


@dataclass
class EngineStats:
    """Counters tests and metrics read: what the engine actually computed."""

    steps: int = 0
    computed_tokens: int = 0  # tokens run through the model (prompt chunks, recomputes, decodes)
    cached_prompt_tokens: int = 0  # prompt tokens served by the prefix cache
    generated_tokens: int = 0
    spec_draft_tokens: int = 0  # n-gram draft tokens proposed and verified
    spec_accepted_tokens: int = 0  # of those, kept (the model agreed)
    spec_verifications: int = 0  # sequence-steps that verified drafts


@dataclass(frozen=True)
class EngineSnapshot:
    """The engine's load and counters at one moment (for metrics, admission and tests)."""

    num_running: int  # sequences in the running batch (every sample of a request)
    num_waiting: int  # sequences queued (new, or preempted; every sample of a request)
    kv_blocks: int
    kv_blocks_free: int
    num_preemptions: int
    steps: int
    computed_tokens: int
    cached_prompt_tokens: int
    generated_tokens: int
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0
    spec_verifications: int = 0

    @property
    def kv_cache_usage(self) -> float:
        return 1.0 - self.kv_blocks_free / self.kv_blocks

    @property
    def spec_acceptance_rate(self) -> float | None:
        """Accepted / proposed draft tokens; None before any was proposed."""
        return self.spec_accepted_tokens / self.spec_draft_tokens if self.spec_draft_tokens else None


@dataclass(frozen=True)
class ValidatedRequest:
    """A request that passed EngineCore.validate: ready to queue, nothing left to check."""

    prompt_token_ids: list[int]
    params: SamplingParams  # as the caller gave them
    core_params: SamplingParams  # what the sampler sees (logprobs on when best_of ranks)
    grammar: CompiledGrammar | None  # the compiled guided-decoding grammar, if any

    @property
    def num_samples(self) -> int:
        return self.params.best_of or self.params.n


@dataclass
class SequenceUpdate:
    """What one step (or an abort) did to one sequence: only what is new."""

    request_id: str
    index: int  # which sample of its request
    new_token_ids: list[int]
    new_logprobs: list[TokenLogprobs] | None  # one per new token, when computed
    finish_reason: str | None  # "stop" | "length" | "abort" | None while running
    stop_reason: int | None  # the stop token id that matched (stop strings are found later)
    num_cached_tokens: int  # the request's prompt tokens served by the prefix cache
    # With prompt_logprobs: the whole prompt's (entry i for prompt token i + 1), once, on
    # the request's first update after its prefill.
    prompt_logprobs: list[TokenLogprobs] | None = None
    # A "stop" normally ends on a stop token, whose text is not output; a repeat guard ends
    # on an ordinary token, which belongs to the text.
    last_token_is_text: bool = False


class EngineCore:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.device = parse_device(config.device)
        # Tensor parallelism: rank 0 (this process) drives worker processes that run the
        # other shards of every step. A torchrun rank other than 0 serves as a worker
        # inside this call and exits the process when rank 0 shuts down.
        self.tp: TPDriver | None = None
        comm = None
        if config.tensor_parallel_size > 1:
            from engine.parallel.driver import start_tensor_parallel

            self.tp = start_tensor_parallel(config, self.device)
            comm, self.device = self.tp.comm, self.tp.device
            weakref.finalize(self, self.tp.close)  # an engine dropped unclosed stops its workers
        try:
            setup = setup_rank(config, self.device, comm)
        except BaseException:
            if self.tp is not None:
                self.tp.abort()
            raise
        loaded = setup.loaded
        self.kernels_kind = "torch" if isinstance(setup.ops, kernels.ops.ReferenceOps) else "triton"
        self.model_config = loaded.config
        self.weights_kind = "fp8" if any(
            isinstance(m, Fp8Linear) for m in loaded.model.modules()) else config.dtype
        self.tokenizer = loaded.tokenizer
        self.eos_token_ids = loaded.eos_token_ids
        self.max_model_len = setup.max_model_len
        num_blocks = setup.num_blocks
        self.runner = setup.runner
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(self.max_model_len, config.max_num_seqs,
                            config.max_num_batched_tokens, config.enable_chunked_prefill,
                            config.speculative_ngram or 0),
            self.block_manager,
        )
        self.sampler = Sampler(config.seed)
        self._seeds = random.Random(config.seed)  # per-sequence streams of unseeded requests
        self.requests: dict[str, Request] = {}
        self._seq_ids = itertools.count()
        self.stats = EngineStats()
        self._grammars: GrammarBackend | None = None  # built on the first guided request
        self._grammars_lock = threading.Lock()  # several validating threads may race for it

    # ---- requests ------------------------------------------------------------------------

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> ValidatedRequest:
        """Every check a request needs, once: the prompt, the parameters against this model,
        and the grammar (compiled and cached; a new schema takes a moment, so async callers
        run this off their event loop). InvalidRequest names the field at fault."""
        if not isinstance(params, SamplingParams):
            raise InvalidRequest(f"sampling params must be SamplingParams, got {params!r}")
        if not prompt_ids:
            raise InvalidRequest("prompt must not be empty", "prompt")
        vocab = self.model_config.vocab_size
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab
               for i in prompt_ids):
            raise InvalidRequest(f"prompt token ids must be integers in [0, {vocab})", "prompt")
        if len(prompt_ids) >= self.max_model_len:
            raise InvalidRequest(f"prompt has {len(prompt_ids)} tokens but the model's context "
                                 f"is {self.max_model_len}", "prompt")
        params.check_vocab(vocab)
        num_samples = params.best_of or params.n
        self.scheduler.check_admissible(len(prompt_ids), num_samples, params.max_tokens)
        core_params = params
        if num_samples > params.n and params.logprobs is None:
            # Ranking samples by cumulative log-probability needs the chosen tokens' logprobs.
            core_params = dataclasses.replace(params, logprobs=0)
        grammar = self.grammars.compile(params.guided) if params.guided is not None else None
        return ValidatedRequest(list(prompt_ids), params, core_params, grammar)

    @property
    def grammars(self) -> GrammarBackend:
        """The grammar compiler and its cache, made on first use (the vocabulary walk
        costs a moment on a large tokenizer)."""
        with self._grammars_lock:
            if self._grammars is None:
                from engine.guided.compiler import GrammarBackend  # xgrammar: guided only

                self._grammars = GrammarBackend(self.tokenizer, self.eos_token_ids,
                                                self.model_config.vocab_size)
            return self._grammars

    def needs_compile(self, spec: GuidedDecoding | None) -> bool:
        """Whether validating a request with this spec may compile a grammar (seconds, for
        a large schema): cheap, and never builds the compiler itself."""
        if spec is None:
            return False
        backend = self._grammars
        return backend is None or not backend.is_cached(spec)

    def add_request(self, request_id: str, valid: ValidatedRequest) -> None:
        """Queue a validated request; its sequences report through `step`."""
        if request_id in self.requests:
            raise InvalidRequest(f"request_id {request_id!r} is already in use")
        params = valid.core_params
        req = Request(request_id, valid.prompt_token_ids, params, arrival=time.monotonic())
        for i in range(valid.num_samples):
            seed = params.seed + i if params.seed is not None else self._seeds.getrandbits(63)
            seq = SequenceState(next(self._seq_ids), req, i)
            seq.generator = torch.Generator(device="cpu").manual_seed(seed)
            if valid.grammar is not None and params.guided is not None:
                seq.grammar = self.grammars.new_state(valid.grammar, params.guided)
            req.seqs.append(seq)
        self.scheduler.add_request(req)
        self.requests[request_id] = req

    def stop_sequence(self, request_id: str, index: int) -> None:
        """End one sequence from outside (a stop string matched in its text)."""
        req = self.requests.get(request_id)
        if req is None:
            return
        seq = req.seqs[index]
        self.scheduler.finish(seq, SequenceStatus.FINISHED_STOPPED)
        seq.grammar = None
        self._forget_if_finished(req)

    def abort_request(self, request_id: str) -> list[SequenceUpdate]:
        """End a request at any stage; its blocks go back to the pool. Returns the end of
        every sequence that was still running."""
        req = self.requests.get(request_id)
        if req is None:
            return []
        running = [s for s in req.seqs if not s.status.finished]
        self.scheduler.abort_seqs(running)
        for seq in req.seqs:
            seq.grammar = None
        self._forget_if_finished(req)
        return [self._update(seq, 0, None) for seq in running]

    def tokenize_for_embedding(self, inputs: list[EmbedInput], truncate: bool) -> list[list[int]]:
        """Inputs of `embed` as token ids; ValueError for empty or too long ones."""
        return tokenize_for_decoder(self.tokenizer, self.model_config.vocab_size,
                                    self.max_model_len, inputs, truncate)

    def embed(self, ids: list[list[int]], pooling: PoolingConfig) -> torch.Tensor:
        """Pooled final hidden states over a scratch KV cache (running requests untouched)."""
        if self.tp is not None:
            return self.tp.run_embed(self.runner.model, self.config, ids, pooling)
        return embed_with_decoder(self.runner.model, self.device, self.config.block_size,
                                  self.config.max_num_batched_tokens, ids, pooling)

    def close(self) -> None:
        """Stop the tensor-parallel workers (nothing to do without them); idempotent."""
        if self.tp is not None:
            self.tp.close()

    def snapshot(self) -> EngineSnapshot:
        s, bm = self.scheduler, self.block_manager
        return EngineSnapshot(s.num_running_seqs, s.num_waiting_seqs, bm.num_blocks,
                              bm.num_free_blocks,
                              s.num_preemptions, **dataclasses.asdict(self.stats))

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    def num_sequences(self) -> int:
        """Sequences running or queued in the scheduler, every sample of a request counted."""
        return self.scheduler.num_running_seqs + self.scheduler.num_waiting_seqs

    # ---- one step ------------------------------------------------------------------------

    def step(self) -> list[SequenceUpdate]:
        """Run one iteration; what is new for every sequence that advanced or ended."""
        sched = self.scheduler.schedule()
        if not sched.scheduled:
            return []
        chunks = [self._chunk(s) for s in sched.scheduled]
        if self.tp is None:
            self.runner.copy_blocks(sched.blocks_to_copy)
            result = self.runner.execute_full(chunks)
        else:  # the workers run the same step on their shards
            result = self.tp.run_step(self.runner, sched.blocks_to_copy, chunks)
        self._keep_prompt_logprobs(sched, result.prompt_logprobs)
        sampled, logprobs = self._sample(sched, result.logits)
        updated = self.scheduler.update_from_output(sched, sampled, self.eos_token_ids)
        emitted = {s.seq: s.num_emitted for s in sched.scheduled if s.draft_token_ids}
        self._count(sched, updated, emitted)
        updates = []
        for seq in updated:
            guarded = self._advance_grammar(seq) if seq.grammar is not None else False
            num_new = emitted.get(seq, 1)
            entries = logprobs.get(seq)
            update = self._update(seq, num_new, entries[:num_new] if entries else None)
            update.last_token_is_text = guarded
            req = seq.request
            if req.params.prompt_logprobs is not None and not req.prompt_logprobs_sent:
                update.prompt_logprobs, req.prompt_logprobs_sent = req.prompt_logprobs, True
            updates.append(update)
        for req in {seq.request for seq in updated}:
            self._forget_if_finished(req)
        return updates

    @staticmethod
    def _chunk(item: ScheduledSequence) -> SequenceChunk:
        seq, drafts = item.seq, item.draft_token_ids
        if not drafts:
            start, end = item.start_pos, item.start_pos + item.num_new_tokens
            chunk = SequenceChunk(seq.tokens[start:end], start, seq.block_table)
            if seq.request.needs_prompt_logprobs:
                # Position p predicts prompt token p + 1 (the next chunk's first, for the
                # last position of this one); the prompt's last position predicts output.
                prompt = seq.prompt_token_ids
                chunk.prompt_targets = prompt[start + 1 : min(end, len(prompt) - 1) + 1]
                chunk.prompt_top_k = seq.params.prompt_logprobs or 0
            return chunk
        # The last token and its drafts, each with its logits (verification).
        return SequenceChunk([seq.tokens[item.start_pos], *drafts], item.start_pos,
                             seq.block_table, all_logits=True)

    @staticmethod
    def _keep_prompt_logprobs(sched: SchedulerOutput,
                              computed: dict[int, list[TokenLogprobs]]) -> None:
        """Append each chunk's prompt logprobs to its request, from the first position
        not yet held (a sequence preempted mid-prefill computes some positions twice)."""
        for i, entries in computed.items():
            item = sched.scheduled[i]
            held = item.seq.request.prompt_logprobs
            skip = len(held) - item.start_pos
            if skip < len(entries):
                held.extend(entries[max(skip, 0):])

    def _count(self, sched: SchedulerOutput, updated: list[SequenceState],
               emitted: dict[SequenceState, int]) -> None:
        stats = self.stats
        stats.steps += 1
        stats.computed_tokens += sched.num_batched_tokens
        stats.generated_tokens += sum(emitted.get(seq, 1) for seq in updated)
        for item in sched.scheduled:
            if item.draft_token_ids:
                stats.spec_verifications += 1
                stats.spec_draft_tokens += len(item.draft_token_ids)
                stats.spec_accepted_tokens += item.num_accepted

    def _update(self, seq: SequenceState, num_new: int,
                logprobs: list[TokenLogprobs] | None) -> SequenceUpdate:
        req = seq.request
        return SequenceUpdate(
            req.request_id, seq.index, seq.output_token_ids[len(seq.output_token_ids) - num_new:],
            logprobs, seq.status.finish_reason, seq.stop_reason, req.num_cached_tokens)

    def _forget_if_finished(self, req: Request) -> None:
        if req.finished and self.requests.pop(req.request_id, None) is not None:
            self.stats.cached_prompt_tokens += req.num_cached_tokens

    def _sample(
        self, sched: SchedulerOutput, logits: torch.Tensor
    ) -> tuple[dict[SequenceState, list[int]], dict[SequenceState, list[TokenLogprobs] | None]]:
        """New tokens per sequence: one sampler row per sequence that reached its last
        token (a request's first prompt gets a row per sample: they share its logits and
        fork), and the verified run of a sequence with drafts. `logits` has one row per
        chunk, d + 1 for a chunk with d drafts."""
        rows: list[int] = []
        seqs: list[SequenceState] = []
        checks: list[DraftCheck] = []
        check_items: list[ScheduledSequence] = []
        row = 0
        for item in sched.scheduled:
            seq, drafts = item.seq, item.draft_token_ids
            if drafts:
                outputs: list = [seq.output_token_ids]
                outputs += [TokenView(seq.output_token_ids, drafts[:j])
                            for j in range(1, len(drafts) + 1)]
                checks.append(DraftCheck(seq.params, seq.prompt_token_ids, outputs,
                                         seq.generator, drafts, row))
                check_items.append(item)
            elif item.completes:
                req = seq.request
                group = req.seqs if not req.forked else [seq]
                rows.extend([row] * len(group))
                seqs.extend(group)
            row += 1 + len(drafts)
        sampled: dict[SequenceState, list[int]] = {}
        logprobs: dict[SequenceState, list[TokenLogprobs] | None] = {}
        if seqs:
            grammars = [s.grammar for s in seqs]
            meta = SamplingMetadata(
                [s.params for s in seqs], [s.prompt_token_ids for s in seqs],
                [s.output_token_ids for s in seqs], [s.generator for s in seqs],
                self.eos_token_ids, grammars if any(g is not None for g in grammars) else None,
            )
            out = self.sampler(logits[torch.tensor(rows, device=logits.device)], meta)
            for seq, token, entry in zip(seqs, out.token_ids, out.logprobs, strict=True):
                leader = seq.request.seqs[0] if not seq.request.forked else seq
                sampled.setdefault(leader, []).append(token)
                logprobs[seq] = [entry] if entry is not None else None
        if checks:
            for item, result in zip(check_items, verify_drafts(logits, checks, self.eos_token_ids),
                                    strict=True):
                sampled[item.seq] = result.token_ids
                logprobs[item.seq] = result.logprobs
        return sampled, logprobs

    def _advance_grammar(self, seq: SequenceState) -> bool:
        """Feed the new token to the sequence's grammar; a terminated grammar ends it, and so
        does an object its repeat guard saw twice (True then: the token is text)."""
        token = seq.output_token_ids[-1]
        guarded = False
        if not seq.grammar.accept(token):
            # The mask forbade this token, so this is a bug, not the client's: end cleanly.
            logger.error("request %s: grammar rejected token %d", seq.request.request_id, token)
            self.scheduler.finish(seq, SequenceStatus.FINISHED_STOPPED)
        elif seq.grammar.terminated:
            self.scheduler.finish(seq, SequenceStatus.FINISHED_STOPPED)
        elif seq.grammar.repeated and not seq.status.finished:
            guarded = True
            self.scheduler.finish(seq, SequenceStatus.FINISHED_STOPPED)
        if seq.status.finished:
            seq.grammar = None
        return guarded
