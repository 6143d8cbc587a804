"""The grammar engine behind guided decoding: xgrammar, fed from OUR tokenizer.

`GrammarBackend` owns one xgrammar TokenizerInfo and GrammarCompiler per model and a cache of
compiled grammars keyed by the spec's canonical JSON, so a schema sent with every request
is compiled once. Several threads may compile at once (AsyncEngine's grammar workers): the
lock guards only the cache and the table of compiles in progress, never a compile itself,
so a lookup of a cached grammar never waits behind a slow compile, and a second request for
a schema being compiled waits for that compile instead of repeating it.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING

import xgrammar as xgr

from engine.errors import InvalidRequest
from engine.guided.options import GuidedDecoding
from engine.guided.schema_fix import fix_schema

if TYPE_CHECKING:
    from engine.tokenizer.tokenizer import Tokenizer

MAX_CACHED_GRAMMARS = 256
_CPP_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)?(\S+\.(cc|h):\d+:\s*)?")


def tokenizer_info(tokenizer: Tokenizer, eos_token_ids: Iterable[int],
                   model_vocab_size: int) -> xgr.TokenizerInfo:
    """The vocabulary as raw byte strings, as xgrammar wants it.

    Special tokens get b"" (xgrammar then never lets them appear inside constrained text,
    though `<|im_end|>` would otherwise spell a valid string piece); the EOS ids are the stop
    tokens a finished grammar allows. The model's logits may be wider than the tokenizer (a
    padded vocabulary): `vocab_size` covers every logit, the extra ids are always masked.
    """
    size = min(tokenizer.vocab_size, model_vocab_size)
    special = tokenizer.all_special_ids
    vocab = [b"" if i in special else tokenizer.token_bytes(i) for i in range(size)]
    stops = sorted(i for i in set(eos_token_ids) if i < size)
    return xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=model_vocab_size,
                             stop_token_ids=stops)


class GrammarBackend:
    def __init__(self, tokenizer: Tokenizer, eos_token_ids: Iterable[int],
                 model_vocab_size: int) -> None:
        self.info = tokenizer_info(tokenizer, eos_token_ids, model_vocab_size)
        self.vocab_size = model_vocab_size
        # One thread per compile: the machine's cores belong to the model. (The compiler is
        # safe to call from several threads at once.)
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)
        self._cache: OrderedDict[str, xgr.CompiledGrammar] = OrderedDict()
        self._compiling: dict[str, Future[xgr.CompiledGrammar]] = {}
        self._lock = threading.Lock()

    def compile(self, spec: GuidedDecoding) -> xgr.CompiledGrammar:
        """The compiled grammar of `spec`; ValueError (starting with "guided") if invalid."""
        with self._lock:
            hit = self._cache.get(spec.key)
            if hit is not None:
                self._cache.move_to_end(spec.key)
                return hit
            running = self._compiling.get(spec.key)
            if running is None:
                mine: Future[xgr.CompiledGrammar] = Future()
                self._compiling[spec.key] = mine
        if running is not None:  # another thread compiles this very spec: share its result
            return running.result()
        try:
            compiled = self._compile(spec)
        except BaseException as e:
            with self._lock:
                del self._compiling[spec.key]
            mine.set_exception(e)
            raise
        with self._lock:
            del self._compiling[spec.key]
            self._cache[spec.key] = compiled
            if len(self._cache) > MAX_CACHED_GRAMMARS:
                self._cache.popitem(last=False)
        mine.set_result(compiled)
        return compiled

    def is_cached(self, spec: GuidedDecoding) -> bool:
        """Whether `compile(spec)` would answer at once."""
        with self._lock:
            return spec.key in self._cache

    @property
    def num_cached(self) -> int:
        return len(self._cache)

    def _compile(self, spec: GuidedDecoding) -> xgr.CompiledGrammar:
        try:
            if spec.json_object:
                # Any object (not any JSON value): the schema {"type": "object"}, lenient.
                return self._compiler.compile_json_schema(
                    {"type": "object"}, any_whitespace=False, strict_mode=False)
            if spec.json_schema is not None:
                # Compact separators and no free whitespace: a weak model cannot wander off
                # into endless blanks, and the output is what json.dumps would write.
                return self._compiler.compile_json_schema(
                    fix_schema(spec.json_schema), any_whitespace=False, strict_mode=True)
            return self._compiler.compile_structural_tag(fix_schema(spec.structural_tag))
        except (RuntimeError, ValueError, TypeError) as e:
            # xgrammar's messages start with a time and a C++ source location: drop them.
            reason = _CPP_PREFIX.sub("", str(e).strip().splitlines()[0])
            raise InvalidRequest(f"guided.{spec.kind} cannot be compiled: {reason}",
                                 "guided") from None
