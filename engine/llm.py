"""LLM: the offline, synchronous Python API (generate, chat) over the batching engine."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from engine.config import EngineConfig
from engine.embedding.decoder_pooling import (
    decoder_pooling,
)
from engine.embedding.sentence_encoder import EmbeddingOutput, EmbedInput
from engine.errors import InvalidRequest
from engine.llm_engine import LLMEngine
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams
from engine.tokenizer.chat_template import render_for_tokenizer

Prompt = str | list[int]


class LLM:
    """Load a model once, then generate from prompts or chat conversations.

    `model` is a registered short name (see `python -m weights.fetch`), an HF-style folder,
    or a .gguf file. Keyword arguments are EngineConfig fields (max_model_len, max_num_seqs,
    max_num_batched_tokens, enable_chunked_prefill, enable_prefix_caching, kv_cache_bytes,
    speculative_ngram, tensor_parallel_size, ...).
    All prompts of one call are batched together by the engine's scheduler.
    """

    def __init__(self, model: str, dtype: str = "float32", device: str = "cpu", seed: int = 0,
                 **engine_args: Any) -> None:
        self.llm_engine = LLMEngine(EngineConfig(model, dtype, device, seed, **engine_args))
        core = self.llm_engine.core
        self.tokenizer = core.tokenizer
        self.model_config = core.model_config
        self.eos_token_ids = core.eos_token_ids
        self.max_model_len = core.max_model_len
        self._ids = itertools.count()

    def close(self) -> None:
        """Stop the tensor-parallel worker processes, if any (also done at exit)."""
        self.llm_engine.core.close()

    def __enter__(self) -> LLM:  # noqa: PYI034 - LLM is not subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        chat_template: str | None = None,
    ) -> str:
        return render_for_tokenizer(
            self.tokenizer, messages, add_generation_prompt, tools, chat_template
        )

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Complete each prompt (text, or a list of token ids); outputs in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        encoded = [
            (p, self.tokenizer.encode(p) if isinstance(p, str) else list(p)) for p in prompts
        ]
        return self._run(encoded, sampling_params, use_tqdm)

    def chat(
        self,
        messages: list[dict[str, Any]] | list[list[dict[str, Any]]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        chat_template: str | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Answer one conversation (a list of messages) or several (a list of lists)."""
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        encoded = []
        for conv in conversations:
            text = self.apply_chat_template(conv, add_generation_prompt, tools, chat_template)
            # The template already wrote BOS where the model wants it.
            encoded.append((text, self.tokenizer.encode(text, add_special_tokens=False)))
        return self._run(encoded, sampling_params, use_tqdm)

    def embed(
        self,
        inputs: EmbedInput | Sequence[EmbedInput],
        pooling: str = "mean",
        normalize: bool = True,
        truncate: bool = False,
    ) -> list[EmbeddingOutput]:
        """Pooled final hidden states ("mean" or "last" token), L2-normalised unless asked
        not to, for a text, token ids, or a list of either. An input over max_model_len
        raises ValueError unless `truncate` keeps its first max_model_len tokens."""
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]  # type: ignore[list-item]
        config = decoder_pooling(pooling, normalize)
        core = self.llm_engine.core
        ids = core.tokenize_for_embedding(list(inputs), truncate)  # type: ignore[arg-type]
        vectors = core.embed(ids, config)
        return [EmbeddingOutput(v.tolist(), i) for v, i in zip(vectors, ids, strict=True)]

    def _run(
        self,
        encoded: list[tuple[Prompt, list[int]]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None,
        use_tqdm: bool,
    ) -> list[RequestOutput]:
        if isinstance(sampling_params, Sequence):
            if len(sampling_params) != len(encoded):
                raise InvalidRequest("sampling_params must be one per prompt")
            params_list = list(sampling_params)
        else:
            params_list = [sampling_params or SamplingParams()] * len(encoded)
        engine = self.llm_engine
        # Validate all before queueing any, so a bad prompt leaves nothing behind.
        valid = [engine.validate(ids, p) for (_, ids), p in zip(encoded, params_list, strict=True)]
        order: dict[str, int] = {}
        for i, ((prompt, _), v) in enumerate(zip(encoded, valid, strict=True)):
            request_id = f"llm-{next(self._ids)}"
            engine.add_request(request_id, v, prompt if isinstance(prompt, str) else None)
            order[request_id] = i
        results: list[RequestOutput | None] = [None] * len(encoded)
        with tqdm(total=len(encoded), disable=not use_tqdm, desc="requests") as bar:
            while engine.has_unfinished():
                for out in engine.step():  # FINAL_ONLY: one output per request, at its end
                    results[order.pop(out.request_id)] = out
                    bar.update(1)
        return [r for r in results if r is not None]
