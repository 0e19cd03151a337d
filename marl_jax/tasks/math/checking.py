"""Final-answer extraction from model text, and answer equivalence for math.

    extract_answer("... so the total is \\boxed{\\dfrac{1}{2}}.")  # '\\dfrac{1}{2}'
    answers_match("0.5", "\\frac{1}{2}")                            # True

Extraction strictness (`STRICTNESS`; a math task's `strictness` option):
  boxed    only the last \\boxed{} / \\fbox{}.
  strict   the stated final-answer formats only: \\boxed{}, a line that starts
           with 'Answer:' or 'Final answer:' (DAPO's format), or '#### x'
           (GSM8K's). Use it with prompts that state the format (the
           instruct prompts of workflows.prompts do), so a reply that ignores
           the format is 'unparsable', never scored on a stray number.
  lenient  also 'the answer is x' / 'answer: x' anywhere in a line, when x
           reads as an answer (at most 3 words, or 8 with a digit or LaTeX; not
           'correct', 'below', ...); then the
           last number, but only from a reply that reads as a bare answer:
           a short one (at most LENIENT_SHORT_CHARS characters: '72', '= 72',
           'x = 72 apples', the tiny world's replies) or a text whose very end
           is that number with at most LENIENT_UNIT_WORDS words after it ('...
           so she has 72 apples.'). A long text whose last number is followed by
           more prose ('60 hours, and then we') gives None.

Equivalence is decided in three steps, cheapest first: the normalised
strings are equal (units, `$`, `%`, `\\text{}`, thousands separators and
spacing removed); both sides are exact rational numbers (integers, decimals,
`a/b`, `\\frac{a}{b}`) and equal; otherwise math-verify decides symbolically
in a worker process that is killed at a time limit (math_symbolic.py), so
an answer like `9**9**9` cannot stall the trainer.
"""

import dataclasses
import fractions
import re
from typing import Optional

from marl_jax.tasks.math import symbolic as math_symbolic

STRICTNESS = ("boxed", "strict", "lenient")
_BOX = re.compile(r"\\(?:boxed|fbox)\b")
_HASHES = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_ANSWER_IS = re.compile(r"\banswer\s*(?:is\b\s*:?|:)\s*(.*?)\s*$",
                        re.IGNORECASE | re.MULTILINE)
_NUMBER_IN_TEXT = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\(?:left|right|displaystyle|!|,|;|:|quad|qquad)(?![a-zA-Z])|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|°|\bdegrees?\b")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_ASSIGNMENT = re.compile(r"[a-zA-Z]\s*=\s*(.+)")
_WITH_UNIT = re.compile(r"([+-]?[\d.,/]+)\s+[a-zA-Z][a-zA-Z\s.]*")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?")
_RATIO = re.compile(r"([+-]?\d+)/(\d+)")
_FRAC = re.compile(
    r"([+-]?)\\frac(?:\{\s*([+-]?[\d.]+)\s*\}|(\d))(?:\{\s*([+-]?[\d.]+)\s*\}|(\d))")
_MAX_SYMBOLIC_CHARS = 400


def _braced(text: str, start: int) -> Optional[tuple]:
  """(content, end) of the brace group opening at text[start], or None."""
  depth, i = 0, start
  while i < len(text):
    ch = text[i]
    if ch == "\\":
      i += 2
      continue
    if ch == "{":
      depth += 1
    elif ch == "}":
      depth -= 1
      if depth == 0:
        return text[start + 1:i], i + 1
    i += 1
  return None


def last_boxed(text: str) -> Optional[str]:
  """Content of the last well-formed \\boxed{...} (or \\fbox), nesting allowed."""
  found = None
  for match in _BOX.finditer(text):
    i = match.end()
    while i < len(text) and text[i] == " ":
      i += 1
    if i < len(text) and text[i] == "{":
      group = _braced(text, i)
      if group is not None:
        found = group[0]
    elif i < len(text):
      token = re.match(r"[^\s$]+", text[i:])
      found = token.group(0) if token else found
  return found


def _sentence_end(answer: str) -> str:
  """Cuts a marker's answer at the end of its sentence."""
  return re.split(r"\.\s|\.$", answer, maxsplit=1)[0].strip()


def _after_marker(line_rest: str) -> str:
  """The answer after the innermost marker ("Answer: The answer is 5.")."""
  while True:
    inner = _ANSWER_IS.search(line_rest)
    if inner is None:
      # Markdown bold around the answer ('**Answer:** 42', 'is **72**.') is no part of it.
      return _sentence_end(line_rest.strip().strip("*").strip()).strip("*").strip()
    line_rest = inner.group(1)


def _unbox(answer: str) -> str:
  """Unwraps an answer that is itself exactly one box: \\boxed{\\boxed{5}}."""
  while re.fullmatch(r"\\(?:boxed|fbox)\s*\{.*\}", answer, re.DOTALL):
    inner = last_boxed(answer)
    if inner is None or _braced(answer, answer.index("{"))[1] != len(answer):
      break
    answer = inner.strip()
  return answer


# The lenient last-number reading (module doc).
LENIENT_SHORT_CHARS = 40
LENIENT_UNIT_WORDS = 4
_LINE_ANSWER = re.compile(r"^[ \t>*_#]*(?:final\s+)?answer[ \t*_]*:[ \t*_]*(.*?)\s*$",
                          re.IGNORECASE | re.MULTILINE)
_ENDS_WITH_NUMBER = re.compile(
    r"(?:-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+)%?[*_)\]}$]*"
    r"(?:[ \t]+[A-Za-z][A-Za-z.'-]*){0," + str(LENIENT_UNIT_WORDS) + r"}[ \t]*[.!*_)\]}]*\s*$")


_NOT_ANSWERS = re.compile(r"(?:correct|incorrect|wrong|right|not|unknown|unclear|below|above|"
                          r"as follows|given|shown|yes|no)\b", re.IGNORECASE)


def _answer_like(answer: str) -> bool:
  """Whether a lenient 'the answer is ...' reading is an answer, not prose ('the answer is
  already in the box', 'the answer is correct'): at most 3 words, or at most 8 with a digit
  or a LaTeX command, and not a verdict or a pointer."""
  if (not re.search(r"[A-Za-z0-9]", answer) or _NOT_ANSWERS.match(answer)
      or re.search(r"\\boxed\s*\{\s*\}", answer)):  # the prompt's '\boxed{}', echoed
    return False
  words = len(answer.split())
  return words <= 3 or (words <= 8 and bool(re.search(r"[\d\\]", answer)))


def _last_number(text: str) -> Optional[str]:
  """The lenient mode's last number (module doc), or None."""
  numbers = _NUMBER_IN_TEXT.findall(text)
  if not numbers:
    return None
  if len(text.strip()) > LENIENT_SHORT_CHARS and not _ENDS_WITH_NUMBER.search(text):
    return None
  return numbers[-1].rstrip(",")


def extract_answer(text: str, strictness: str = "lenient") -> Optional[str]:
  """The final answer in model text, or None (strictness: see the module doc)."""
  if strictness not in STRICTNESS:
    raise ValueError(f"strictness must be one of {STRICTNESS}, got {strictness!r}")
  if not isinstance(text, str):
    return None
  boxed = last_boxed(text)
  if boxed is not None and boxed.strip():
    return _unbox(boxed.strip())
  if strictness == "boxed":
    return None
  markers = (_HASHES, _LINE_ANSWER) if strictness == "strict" else (_HASHES, _ANSWER_IS)
  for pattern in markers:
    answers = [_after_marker(m.group(1)) for m in pattern.finditer(text)]
    answers = [a for a in answers if a and (pattern is not _ANSWER_IS or _answer_like(a))]
    if answers:
      return answers[-1]
  if strictness == "lenient":
    return _last_number(text)
  return None


def normalize(answer: str) -> str:
  """Strips presentation: boxes, `$`, `\\text{}`, units, `%`, separators."""
  s = _unbox(answer.strip())
  for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    while s.startswith(left) and s.endswith(right) and len(s) > len(left + right) - 1:
      s = s[len(left):len(s) - len(right)].strip()
  previous = None
  while previous != s:
    previous, s = s, _WRAPPERS.sub(r"\1", s)
  s = _SPACING.sub(" ", s)
  s = re.sub(r"\\[dt]frac", r"\\frac", s)
  s = _DEGREES.sub("", s)
  s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
  s = re.sub(r"\s*\bpercent\b", "", s).replace("{,}", ",").strip()
  s = s.rstrip(".").strip()
  assigned = _ASSIGNMENT.fullmatch(s)
  if assigned and as_number(assigned.group(1).strip()) is not None:
    s = assigned.group(1).strip()
  unit = _WITH_UNIT.fullmatch(s)
  if unit and as_number(unit.group(1).replace(",", "")) is not None:
    s = unit.group(1)
  if _THOUSANDS.fullmatch(s):
    s = s.replace(",", "")
  return s


def as_number(answer: str) -> Optional[fractions.Fraction]:
  """The exact rational value of a plain numeric answer, else None."""
  s = answer.replace(" ", "")
  if not s or len(s) > 100:
    return None
  try:
    if _DECIMAL.fullmatch(s):
      return fractions.Fraction(s)
    ratio = _RATIO.fullmatch(s)
    if ratio and int(ratio.group(2)):
      return fractions.Fraction(int(ratio.group(1)), int(ratio.group(2)))
    frac = _FRAC.fullmatch(s)
    if frac:
      sign, num, den = frac.group(1), frac.group(2) or frac.group(3), frac.group(4) or frac.group(5)
      value = fractions.Fraction(num) / fractions.Fraction(den)
      return -value if sign == "-" else value
  except (ValueError, ZeroDivisionError):
    return None
  return None


@dataclasses.dataclass(frozen=True)
class Match:
  """Result of comparing two answers; `timed_out` if the symbolic check ran out."""
  equal: bool
  timed_out: bool = False


def compare(predicted: Optional[str], reference: Optional[str],
            timeout_s: float = 5.0) -> Match:
  """Decides whether two extracted answers denote the same value."""
  if not isinstance(predicted, str) or not isinstance(reference, str):
    return Match(False)
  a, b = normalize(predicted), normalize(reference)
  if not a or not b:
    return Match(False)
  if re.sub(r"\s+", "", a) == re.sub(r"\s+", "", b):
    return Match(True)
  x, y = as_number(a), as_number(b)
  if x is not None and y is not None:
    return Match(x == y)
  if len(a) > _MAX_SYMBOLIC_CHARS or len(b) > _MAX_SYMBOLIC_CHARS:
    return Match(False)
  verdict = math_symbolic.equal(a, b, timeout_s)
  return Match(False, timed_out=True) if verdict is None else Match(verdict)


def answers_match(predicted: Optional[str], reference: Optional[str]) -> bool:
  """True if the two answers are equivalent (see module docstring)."""
  return compare(predicted, reference).equal
