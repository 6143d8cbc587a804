"""The grammar engine behind guided decoding: xgrammar, fed from OUR tokenizer.

`GrammarBackend` owns one xgrammar TokenizerInfo and GrammarCompiler per model and a cache of
compiled grammars keyed by the spec's canonical JSON, so a schema sent with every request
is compiled once. Several threads may compile at once (AsyncEngine's grammar workers): the
lock guards only the cache and the table of compiles in progress, never a compile itself,
so a lookup of a cached grammar never waits behind a slow compile, and a second request for
a schema being compiled waits for that compile instead of repeating it.

Every grammar is compiled from its EBNF text after `bound_literals` (engine/guided/bounds.py)
has bounded the JSON numbers and strings the schema leaves unbounded.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING

import xgrammar as xgr

from engine.errors import InvalidRequest
from engine.guided.bounds import DEFAULT_MAX_STRING_CHARS, bound_literals
from engine.guided.matcher import GrammarState
from engine.guided.options import GuidedDecoding
from engine.guided.repeat_guard import RepeatGuard
from engine.guided.schema_fix import fix_schema

if TYPE_CHECKING:
    from engine.tokenizer.tokenizer import Tokenizer

MAX_CACHED_GRAMMARS = 256
_CPP_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)?(\S+\.(cc|h):\d+:\s*)?")


def vocab_bytes(tokenizer: Tokenizer, model_vocab_size: int) -> list[bytes]:
    """The vocabulary as raw byte strings, as xgrammar wants it.

    Special tokens get b"" (xgrammar then never lets them appear inside constrained text,
    though `<|im_end|>` would otherwise spell a valid string piece).
    """
    size = min(tokenizer.vocab_size, model_vocab_size)
    special = tokenizer.all_special_ids
    return [b"" if i in special else tokenizer.token_bytes(i) for i in range(size)]


class GrammarBackend:
    def __init__(self, tokenizer: Tokenizer, eos_token_ids: Iterable[int],
                 model_vocab_size: int) -> None:
        self.token_bytes = vocab_bytes(tokenizer, model_vocab_size)
        # The EOS ids are the stop tokens a finished grammar allows. The model's logits may be
        # wider than the tokenizer (a padded vocabulary): `vocab_size` covers every logit,
        # the extra ids are always masked.
        stops = sorted(i for i in set(eos_token_ids) if i < len(self.token_bytes))
        self.info = xgr.TokenizerInfo(self.token_bytes, xgr.VocabType.RAW,
                                      vocab_size=model_vocab_size, stop_token_ids=stops)
        self.vocab_size = model_vocab_size
        self.max_string_chars = DEFAULT_MAX_STRING_CHARS  # grammars compiled from now on
        # One thread per compile: the machine's cores belong to the model. (The compiler is
        # safe to call from several threads at once.)
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)
        self._cache: OrderedDict[str, xgr.CompiledGrammar] = OrderedDict()
        self._compiling: dict[str, Future[xgr.CompiledGrammar]] = {}
        self._lock = threading.Lock()

    def compile(self, spec: GuidedDecoding) -> xgr.CompiledGrammar:
        """The compiled grammar of `spec`; ValueError (starting with "guided") if invalid."""
        key = f"{self.max_string_chars}:{spec.key}"  # the bound is part of the grammar
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            running = self._compiling.get(key)
            if running is None:
                mine: Future[xgr.CompiledGrammar] = Future()
                self._compiling[key] = mine
        if running is not None:  # another thread compiles this very spec: share its result
            return running.result()
        try:
            compiled = self._compile(spec)
        except BaseException as e:
            with self._lock:
                del self._compiling[key]
            mine.set_exception(e)
            raise
        with self._lock:
            del self._compiling[key]
            self._cache[key] = compiled
            if len(self._cache) > MAX_CACHED_GRAMMARS:
                self._cache.popitem(last=False)
        mine.set_result(compiled)
        return compiled

    def is_cached(self, spec: GuidedDecoding) -> bool:
        """Whether `compile(spec)` would answer at once."""
        with self._lock:
            return f"{self.max_string_chars}:{spec.key}" in self._cache

    def new_state(self, compiled: xgr.CompiledGrammar, spec: GuidedDecoding) -> GrammarState:
        """A fresh sequence's grammar state (with the spec's repeat guard, if any)."""
        guard = RepeatGuard(spec.stop_on_repeat) if spec.stop_on_repeat else None
        return GrammarState(compiled, guard, self.token_bytes)

    @property
    def num_cached(self) -> int:
        return len(self._cache)

    def _compile(self, spec: GuidedDecoding) -> xgr.CompiledGrammar:
        try:
            if spec.json_object:
                # Any object (not any JSON value): the schema {"type": "object"}, lenient.
                grammar = xgr.Grammar.from_json_schema(
                    json.dumps({"type": "object"}), any_whitespace=False, strict_mode=False)
            elif spec.json_schema is not None:
                # Compact separators and no free whitespace: a weak model cannot wander off
                # into endless blanks, and the output is what json.dumps would write.
                grammar = xgr.Grammar.from_json_schema(
                    json.dumps(fix_schema(spec.json_schema)), any_whitespace=False,
                    strict_mode=True)
            else:
                grammar = xgr.Grammar.from_structural_tag(
                    json.dumps(fix_schema(spec.structural_tag)))
            return self._compiler.compile_grammar(
                bound_literals(str(grammar), self.max_string_chars))
        except (RuntimeError, ValueError, TypeError) as e:
            # xgrammar's messages start with a time and a C++ source location: drop them.
            reason = _CPP_PREFIX.sub("", str(e).strip().splitlines()[0])
            raise InvalidRequest(f"guided.{spec.kind} cannot be compiled: {reason}",
                                 "guided") from None
