"""LLMEngine: EngineCore and OutputProcessor driven together, synchronously.

    validate -> add_request -> step, step, ... -> RequestOutputs of the kind each asked for

The core computes token ids; the processor turns them into text and outputs and reports
sequences that hit a stop string, which are ended in the core before the next step. The
offline LLM calls this directly; the AsyncEngine calls it on its worker thread.
"""

from __future__ import annotations

from engine.config import EngineConfig
from engine.engine_core import EngineCore, ValidatedRequest
from engine.errors import InvalidRequest
from engine.output_processor import OutputProcessor
from engine.outputs import RequestOutput, RequestOutputKind
from engine.sampling_params import SamplingParams
from engine.tokenizer.stop_matcher import stop_matcher


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.core = EngineCore(config)
        self.processor = OutputProcessor(self.core.tokenizer)

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> ValidatedRequest:
        """Every check of a request, once (see EngineCore.validate). Its stop strings' matcher
        is built here too (cached: add_request, on the event loop's thread, finds it made)."""
        valid = self.core.validate(prompt_ids, params)
        if params.stop:
            stop_matcher(tuple(params.stop))
        return valid

    def add_request(self, request_id: str, valid: ValidatedRequest, prompt: str | None = None,
                    output_kind: RequestOutputKind = RequestOutputKind.FINAL_ONLY) -> None:
        if not isinstance(output_kind, RequestOutputKind):
            raise InvalidRequest(f"output_kind must be a RequestOutputKind, got {output_kind!r}")
        self.core.add_request(request_id, valid)
        self.processor.add_request(request_id, prompt, valid.prompt_token_ids, valid.params,
                                   valid.num_samples, output_kind)

    def has_unfinished(self) -> bool:
        return self.core.has_unfinished()

    def step(self) -> list[RequestOutput]:
        """One engine iteration; the outputs it produced, in request arrival order."""
        processed = self.processor.process(self.core.step())
        for request_id, index in processed.stopped:
            self.core.stop_sequence(request_id, index)
        return processed.outputs

    def abort(self, request_id: str) -> RequestOutput | None:
        """End a request at any stage; its last output (finish_reason "abort"), if any."""
        outputs = self.processor.process(self.core.abort_request(request_id)).outputs
        return outputs[0] if outputs else None
