"""LLM: the offline, synchronous Python API (generate, chat)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch

from engine.chat_template import fallback_template, render_chat
from engine.config import EngineConfig, blocks_needed, parse_dtype
from engine.detokenizer import IncrementalDetokenizer
from engine.model.loader import load_model
from engine.model_runner import ModelRunner, ScheduledSequence
from engine.outputs import CompletionOutput, Logprob, PositionLogprobs, RequestOutput
from engine.request import Request, RequestStatus
from engine.sampler import Sampler, SamplingMetadata, TokenLogprobs
from engine.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

Prompt = str | list[int]


def parse_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a valid torch device") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return dev


class LLM:
    """Load a model once, then generate from prompts or chat conversations.

    `model` is a registered short name (see `python -m weights.fetch`), an HF-style folder,
    or a .gguf file.
    """

    def __init__(
        self,
        model: str,
        dtype: str = "float32",
        device: str = "cpu",
        seed: int = 0,
        max_model_len: int | None = None,
        block_size: int = 16,
    ) -> None:
        self.config = EngineConfig(model, dtype, device, seed, max_model_len, block_size)
        self.device = parse_device(device)
        loaded = load_model(model, parse_dtype(dtype), self.device)
        self.model_config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.eos_token_ids = loaded.eos_token_ids
        limit = loaded.config.max_position_embeddings
        if max_model_len is not None and max_model_len > limit:
            raise ValueError(f"max_model_len {max_model_len} exceeds the model's context {limit}")
        self.max_model_len = max_model_len or limit
        num_blocks = blocks_needed(self.max_model_len, block_size)
        self.runner = ModelRunner(loaded.model, num_blocks, block_size, self.device)
        self.sampler = Sampler(seed)
        self._next_id = 0

    # ---- prompts -------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        chat_template: str | None = None,
    ) -> str:
        tok = self.tokenizer
        template = chat_template or tok.chat_template
        if template is None:
            template = fallback_template({tok.id_to_token(i) for i in tok.all_special_ids})
        return render_chat(
            template, messages, bos_token=tok.bos_token, eos_token=tok.eos_token,
            add_generation_prompt=add_generation_prompt, tools=tools,
        )

    def _prompt_ids(self, prompt: Prompt, add_special_tokens: bool = True) -> list[int]:
        ids = (
            self.tokenizer.encode(prompt, add_special_tokens=add_special_tokens)
            if isinstance(prompt, str)
            else list(prompt)
        )
        if not ids:
            raise ValueError("prompt must not be empty")
        vocab = self.model_config.vocab_size
        if any(not isinstance(i, int) or not 0 <= i < vocab for i in ids):
            raise ValueError(f"prompt token ids must be integers in [0, {vocab})")
        if len(ids) >= self.max_model_len:
            raise ValueError(
                f"prompt has {len(ids)} tokens but the model's context is {self.max_model_len}"
            )
        return ids

    def _check_params(self, params: SamplingParams | None) -> SamplingParams:
        params = params or SamplingParams()
        params.check_vocab(self.model_config.vocab_size)
        return params

    # ---- public API ----------------------------------------------------------------------

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | None = None,
    ) -> list[RequestOutput]:
        """Complete each prompt (text, or a list of token ids)."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        params = self._check_params(sampling_params)
        return [self._run(p, self._prompt_ids(p), params) for p in prompts]

    def chat(
        self,
        messages: list[dict[str, Any]] | list[list[dict[str, Any]]],
        sampling_params: SamplingParams | None = None,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        chat_template: str | None = None,
    ) -> list[RequestOutput]:
        """Answer one conversation (a list of messages) or several (a list of lists)."""
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        params = self._check_params(sampling_params)
        outputs = []
        for conv in conversations:
            text = self.apply_chat_template(conv, add_generation_prompt, tools, chat_template)
            # The template already wrote BOS where the model wants it.
            outputs.append(self._run(text, self._prompt_ids(text, add_special_tokens=False), params))
        return outputs

    # ---- generation ----------------------------------------------------------------------

    def _run(self, prompt: Prompt, prompt_ids: list[int], params: SamplingParams) -> RequestOutput:
        request_id = str(self._next_id)
        self._next_id += 1
        best_of = params.best_of or params.n
        # Ranking by cumulative log-probability needs the chosen tokens' logprobs.
        run_params = params
        if best_of > params.n and params.logprobs is None:
            run_params = dataclasses.replace(params, logprobs=0)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(params.seed)
        samples = [self._sample(prompt_ids, run_params, generator) for _ in range(best_of)]
        if best_of > params.n:
            samples.sort(key=lambda s: s.cumulative_logprob or 0.0, reverse=True)
            samples = samples[: params.n]
            if params.logprobs is None:
                for s in samples:
                    s.logprobs = None
        for i, s in enumerate(samples):
            s.index = i
        text = prompt if isinstance(prompt, str) else None
        return RequestOutput(request_id, text, prompt_ids, samples, finished=True)

    def _sample(
        self, prompt_ids: list[int], params: SamplingParams, generator: torch.Generator | None
    ) -> CompletionOutput:
        req = Request("", list(prompt_ids), params, self.max_model_len)
        detok = IncrementalDetokenizer(
            self.tokenizer, prompt_ids, skip_special_tokens=params.skip_special_tokens,
            stop=params.stop, include_stop_str_in_output=params.include_stop_str_in_output,
        )
        block_table = list(range(blocks_needed(self.max_model_len, self.runner.block_size)))
        logprobs: list[PositionLogprobs] | None = [] if params.logprobs is not None else None
        cumulative = 0.0
        req.status = RequestStatus.RUNNING
        while not req.status.finished:
            new = req.all_token_ids[req.num_computed_tokens:]
            logits = self.runner.execute(
                [ScheduledSequence(new, req.num_computed_tokens, block_table)]
            )
            req.num_computed_tokens += len(new)
            meta = SamplingMetadata(
                [params], [req.prompt_token_ids], [req.output_token_ids], [generator],
                self.eos_token_ids,
            )
            out = self.sampler(logits, meta)
            token = out.token_ids[0]
            req.output_token_ids.append(token)
            if out.logprobs[0] is not None:
                cumulative += out.logprobs[0].logprob
                if logprobs is not None:
                    logprobs.append(self._logprobs(out.logprobs[0]))
            self._update_stop(req, detok, token)
        return CompletionOutput(
            index=0, text=detok.output_text, token_ids=req.output_token_ids,
            finish_reason=req.status.finish_reason, stop_reason=req.stop_reason,
            logprobs=logprobs, cumulative_logprob=cumulative if params.logprobs is not None else None,
        )

    def _update_stop(self, req: Request, detok: IncrementalDetokenizer, token: int) -> None:
        """Token-level stops first; an EOS or stop token's own text never reaches the output."""
        if req.check_stop(self.eos_token_ids) and req.status == RequestStatus.FINISHED_STOPPED:
            return
        detok.step([token])
        if detok.finished and detok.stop_reason is not None:
            req.stop_on_string(detok.stop_reason)

    def _logprobs(self, entry: TokenLogprobs) -> PositionLogprobs:
        def make(token_id: int, logprob: float) -> Logprob:
            tok = self.tokenizer
            return Logprob(token_id, tok.decode([token_id]), logprob, tok.token_bytes(token_id))

        return PositionLogprobs(make(entry.token_id, entry.logprob), [make(*t) for t in entry.top])
