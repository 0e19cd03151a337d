"""Every reading of the phrasing tables: real SmolLM2 replies and Qwen3 / Llama-style ones.

The instruct parsers (workflows.parsing, style 'instruct') read the stated
final line first, then ordinary phrasing; a failure is counted only when
nothing can be read. Math answers are read by the task's extraction in its
strict and lenient modes (tasks.math.checking).
"""

import collections

import pytest

from marl_jax.tasks.math import checking
from marl_jax.workflows import parsing
from tests.workflows import phrasings_smollm2 as smol
from tests.workflows import phrasings_written as written

KINDS = ("verdicts", "choices", "plans", "answers")


def _same(a, b):
  return checking.compare(a, b).equal


def _lenient(text):
  return checking.extract_answer(text, "lenient")


def _entries(kind):
  return [(source, text, *rest) for source, text, *rest in getattr(written, kind.upper())
          + getattr(smol, kind.upper())]


def _id(entry):
  return f"{entry[0]}:{entry[1][:40]!r}"


def test_each_role_kind_has_at_least_40_phrasings_with_real_smollm2_ones():
  for kind in KINDS:
    sources = collections.Counter(source for source, *_ in _entries(kind))
    assert sum(sources.values()) >= 40, (kind, sources)
    assert sources["smollm2"] >= 10, (kind, sources)
    assert set(sources) <= {"smollm2", written.Q, written.L}, sources


@pytest.mark.parametrize("entry", _entries("verdicts"), ids=_id)
def test_verdict_readings(entry):
  # Real entries carry the answer they judged ('the correct answer is X' is compared with it).
  _, text, expected, *judged = entry
  parsed = parsing.verdict(text, judged[0] if judged else "72", same=_same)
  if expected is None:
    assert parsed.failures == ("no_verdict",) and not parsed.value.readable
    assert parsed.value.correct is False  # an unreadable verdict never approves
  else:
    assert parsed.failures == () and parsed.value.correct is expected


@pytest.mark.parametrize("entry", _entries("choices"), ids=_id)
def test_choice_readings(entry):
  # Entries may carry their own candidates (real rollouts) and whether own answers count.
  _, text, expected, *rest = entry
  candidates = list(rest[0] if rest else written.CHOICE_CANDIDATES)
  own = bool(rest[1]) if len(rest) > 1 else False
  parsed = parsing.choice(text, candidates, _lenient, allow_own_answer=own, same=_same)
  if expected is None:
    assert parsed.failures == ("bad_choice",)
  elif isinstance(expected, tuple):
    assert parsed.failures == () and (parsed.value, parsed.answer) == (None, expected[1])
  else:
    assert parsed.failures == () and parsed.value == expected - 1
    assert parsed.answer == candidates[expected - 1]


@pytest.mark.parametrize("entry", written.OWN_ANSWERS, ids=_id)
def test_synthesizer_own_answer_readings(entry):
  _, text, candidates, expected = entry
  parsed = parsing.choice(text, list(candidates), _lenient, allow_own_answer=True, same=_same)
  assert parsed.failures == ()
  if isinstance(expected, tuple):
    assert (parsed.value, parsed.answer) == (None, expected[1])
  else:
    assert parsed.value == expected - 1


@pytest.mark.parametrize("entry", _entries("plans"), ids=_id)
def test_plan_readings(entry):
  _, text, expected, *rest = entry
  m = rest[0] if rest else written.PLAN_M
  parsed = parsing.strategies(text, m)
  assert parsed.value[:len(expected)] == tuple(expected)[:m]
  assert parsed.value[len(expected):] == (parsing.FALLBACK_STRATEGY,) * max(0, m - len(expected))
  assert parsed.failures == (("too_few",) if len(expected) < m else
                             ("too_many",) if len(expected) > m else ())


@pytest.mark.parametrize("entry", _entries("answers"), ids=_id)
def test_answer_readings(entry):
  _, text, (strict, lenient) = entry
  assert checking.extract_answer(text, "strict") == strict
  assert checking.extract_answer(text, "lenient") == lenient
