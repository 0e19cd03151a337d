"""The stdin/stdout judge: a program's output against the expected output.

Rules (Codeforces' testlib checkers and LiveCodeBench's, where they agree):

- Whitespace: both outputs are split into tokens on ASCII whitespace
  (space, tab, newline, carriage return, form feed, vertical tab), so
  leading/trailing blanks, trailing newlines, CRLF line ends and the way
  tokens are laid out over lines do not matter (testlib's `wcmp`/`rcmp`
  read tokens and ignore line breaks; LiveCodeBench strips each line).
  Any other character, NUL and non-ASCII spaces included, is part of a
  token. The token counts must be equal.
- Tokens equal as text match.
- Numbers are decimal literals (`-12`, `3.`, `.5`, `1e-9`; no `nan`,
  `inf`, hex or `_` separators) and are read exactly, as `decimal.Decimal`
  (LiveCodeBench's `convert_line_to_decimals`), never as floats: integers
  of any size compare exactly, so 123456789999 != 123456789012 and two
  different numbers above 1e308 never both become `inf`.
- An expected integer token (`[+-]?[0-9]+`) matches only a number of the
  same exact value (`7`, `+7`, `07` and `7.0` all equal 7; `8` never does).
- An expected non-integer number (`0.5`, `1e-3`) also matches a number
  within ABS_TOL or REL_TOL of it: |got - expected| <= 1e-6, or
  |got - expected| <= 1e-6 * |expected| (testlib's `doubleCompare` with the
  1e-6 of `rcmp6`, the error bound most Codeforces statements give).
  LiveCodeBench itself has no tolerance; this one only ever admits answers
  that a Codeforces checker would.

Standard library only: this module runs inside the sandbox's tests process.
"""

import decimal
import re
from typing import Optional

ABS_TOL = decimal.Decimal("1e-6")
REL_TOL = decimal.Decimal("1e-6")
_BLANKS = re.compile(r"[ \t\n\r\f\v]+")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Differences are rounded to 40 digits: ample for a 1e-6 tolerance; the
# exponent range is the widest decimal allows, and no signal raises, so a
# token like 1e999999999999 compares instead of crashing the judge.
_CONTEXT = decimal.Context(prec=40, Emax=decimal.MAX_EMAX,
                           Emin=decimal.MIN_EMIN, traps=[])
_SHOWN_CHARS = 40


def tokens(text: str) -> list:
  """The whitespace-separated tokens of an output (ASCII whitespace only)."""
  return [t for t in _BLANKS.split(text) if t]


def _number(token: str) -> Optional[decimal.Decimal]:
  if not _NUMBER.fullmatch(token):
    return None
  try:
    return decimal.Decimal(token)
  except (decimal.InvalidOperation, ValueError):  # exponent out of range
    return None


def tokens_match(got: str, expected: str) -> bool:
  """Whether one output token matches the expected one (rules above)."""
  if got == expected:
    return True
  want, have = _number(expected), _number(got)
  if want is None or have is None:
    return False
  if have == want:  # Exact value: Decimal comparison never rounds.
    return True
  if _INTEGER.fullmatch(expected):
    return False
  diff = _CONTEXT.abs(_CONTEXT.subtract(have, want))
  return diff <= ABS_TOL or diff <= _CONTEXT.multiply(REL_TOL, want.copy_abs())


def _show(token: str) -> str:
  text = repr(token)
  return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def first_difference(got: str, expected: str) -> Optional[str]:
  """None if the outputs match, else where and how they first differ."""
  have, want = tokens(got), tokens(expected)
  for i, (a, b) in enumerate(zip(have, want)):
    if not tokens_match(a, b):
      return (f"token {i + 1} of {len(want)}: expected {_show(b)}, "
              f"got {_show(a)}")
  if len(have) != len(want):
    return f"expected {len(want)} tokens, got {len(have)}"
  return None


def outputs_match(got: str, expected: str) -> bool:
  """Whether a program's stdout `got` matches `expected` (rules above)."""
  return first_difference(got, expected) is None
