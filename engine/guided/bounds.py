"""Bounds on JSON literals, written into a grammar's EBNF before it is compiled.

xgrammar's JSON grammars let a number have any number of digits and a string any number of
characters where the schema gives no bound, so a weak model can write `1111...` or one
sentence over and over until its token limit. Every grammar (JSON object, JSON schema,
structural tag) is therefore compiled from its EBNF text with

- an integer part of at most MAX_INT_DIGITS digits (19: int64's range has 19 digits), a
  fraction of at most MAX_FRACTION_DIGITS, an exponent of at most MAX_EXPONENT_DIGITS (2:
  every such number is a finite double);
- a string of at most `max_string_chars` characters (DEFAULT_MAX_STRING_CHARS), escapes
  counted as written. The string's characters become a character-budgeted free-text region
  (xgrammar's TagDispatch with `max_chars`, which masks as fast as the unbounded rule while
  the budget is large; a bounded repetition of the character rule would cost about 0.6 s per
  token's mask on a 30k vocabulary, measured): no `"`, no control character, a backslash
  only as the start of a JSON escape. Its one looseness: a lone byte of a multi-byte UTF-8 character may
  pass (the detokenizer turns it into U+FFFD, so the JSON stays valid).

Bounds the schema does give (minimum / maximum, maxLength, pattern, enum) are untouched. The
rewrite only narrows the language: what it admits is still JSON satisfying the schema.

Only grammar structure is rewritten, never text inside quoted literals, character classes or
Regex("...") bodies (a `pattern` of the schema keeps its own meaning).
"""

from __future__ import annotations

import re

MAX_INT_DIGITS = 19
MAX_FRACTION_DIGITS = 19
MAX_EXPONENT_DIGITS = 2
DEFAULT_MAX_STRING_CHARS = 4096

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


# xgrammar's JSON string body: the closing quote, or a character / an escape and the rest.
_STRING_RULE = re.compile(
    r'^(?P<name>\w+) ::= \(\("\\""\) \| \(\[\^\\0-\\x1f\\"\\\\\\r\\n\] (?P=name)\) '
    r'\| \("\\\\" (?P<escape>\w+) (?P=name)\)\)(?P<after> \(=.*\))?$', re.MULTILINE)
_CONTROL = ", ".join(f'"\\x{i:02x}"' for i in range(32))


def bound_strings(ebnf: str, max_chars: int = DEFAULT_MAX_STRING_CHARS) -> str:
    """`ebnf` with every unbounded JSON string body at most `max_chars` characters long."""

    def bounded(m: re.Match[str]) -> str:
        name, chars = m.group("name"), f"{m.group('name')}_bounded"
        return (f'{name} ::= (({chars} "\\"")){m.group("after") or ""}\n'
                f"{chars}[max_chars={max_chars}] ::= TagDispatch(\n"
                f'  ("\\\\", {m.group("escape")}),\n'
                "  loop_after_dispatch=true,\n"
                f'  excludes=("\\"", {_CONTROL})\n)')

    return _STRING_RULE.sub(bounded, ebnf)


def bound_literals(ebnf: str, max_string_chars: int = DEFAULT_MAX_STRING_CHARS) -> str:
    """Numbers and strings bounded (see the module's docstring)."""
    return bound_strings(bound_numbers(ebnf), max_string_chars)
