"""Bounds on JSON number literals, written into a grammar's EBNF before it is compiled.

xgrammar's JSON grammars let an integer, a fraction or an exponent have any number of
digits where the schema gives no bound, so a weak model can write `1111...` until its token
limit. Every grammar (JSON object, JSON schema, structural tag) is therefore compiled from
its EBNF text with each unbounded digit run bounded:

- the integer part: at most MAX_INT_DIGITS digits (19: int64's range has 19 digits);
- a fraction: at most MAX_FRACTION_DIGITS digits;
- an exponent: at most MAX_EXPONENT_DIGITS digits (2: every such number is a finite double).

Bounds the schema does give (minimum / maximum) are xgrammar's own and untouched. The rewrite
only narrows the language: what it admits is still valid JSON satisfying the schema.

Only grammar structure is rewritten, never text inside quoted literals, character classes or
Regex("...") bodies (a `pattern` of the schema keeps its own meaning).
"""

from __future__ import annotations

import re

MAX_INT_DIGITS = 19
MAX_FRACTION_DIGITS = 19
MAX_EXPONENT_DIGITS = 2

# A rule whose whole body is one decimal digit: xgrammar repeats such rules for digit runs.
_DIGIT_RULE = re.compile(r"^(\w+) ::= \(\(\[0-9\]\)\)$", re.MULTILINE)

_QUOTED = r'"(?:[^"\\]|\\.)*"'
_CLASS = r"\[(?:[^\]\\]|\\.)*\]"


def _pattern(digit_rules: list[str]) -> re.Pattern[str]:
    names = "|".join(re.escape(n) for n in sorted(digit_rules, key=len, reverse=True))
    runs = rf"(?P<exp>\[eE\] \w+ )?\b(?P<rule>{names})\{{(?P<lo>\d+), -1\}}" if names else r"(?!)"
    # Alternatives are tried in order at each position: the targets first, then whole quoted
    # strings and character classes, which are skipped as units.
    return re.compile(
        r"(?P<nat>\[1-9\] \[0-9\]\*)"  # a natural number's tail, unbounded
        rf"|{runs}"  # a digit rule repeated lo..unbounded times
        rf"|(?P<skip>{_QUOTED}|{_CLASS})"
    )


def _replace(m: re.Match[str]) -> str:
    if m.group("nat"):
        return f"[1-9] [0-9]{{0, {MAX_INT_DIGITS - 1}}}"
    if m.group("rule"):
        lo = int(m.group("lo"))
        if m.group("exp"):
            return f"{m.group('exp')}{m.group('rule')}{{{lo}, {max(lo, MAX_EXPONENT_DIGITS)}}}"
        # After "." a fraction; after a leading [1-9] (an integer part with a lower bound
        # only) the rest of the integer digits.
        before = m.string[max(0, m.start() - 6):m.start()]
        hi = MAX_INT_DIGITS - 1 if before.endswith("[1-9] ") else MAX_FRACTION_DIGITS
        return f"{m.group('rule')}{{{lo}, {max(lo, hi)}}}"
    return m.group(0)


def bound_numbers(ebnf: str) -> str:
    """`ebnf` (xgrammar's printed grammar) with every unbounded JSON digit run bounded."""
    return _pattern(_DIGIT_RULE.findall(ebnf)).sub(_replace, ebnf)
