"""Parsing of role outputs, each with a defined fallback and named failure counts.

Output formats are short so 512-position character models can produce them:
  generator / worker   the task's own answer format (the task extracts it)
  aggregator           the number of the chosen candidate (1-based), or an answer
  synthesizer          the same, or its own final answer
  evaluator            'correct', or 'incorrect: <feedback>'
  orchestrator         one strategy per line

Failures (metric `parse/<role>/<failure>`) and what happens instead:
  empty       no text at all            the role's fallback below; no other failure
                                        is counted for the call
  truncated   no stop token within max_new_tokens: the text is parsed as is
  no_answer   generator/worker: the task finds no final answer; the call
              proposes none (no vote; reward 0 if it becomes final)
  bad_choice  aggregator/synthesizer: neither a candidate number nor an answer
              that can be used: fall back to the majority vote of the candidates
  no_verdict  evaluator: neither 'correct' nor 'incorrect': treated as
              'correct' (the episode stops with the current answer), so a
              malformed judge never rewrites an answer; judged wrong when scored
  too_few     orchestrator: fewer than M strategies: the missing ones are
              FALLBACK_STRATEGY
  too_many    orchestrator: more than M: the first M are kept
"""

from __future__ import annotations

import dataclasses
import operator
import re
from typing import Any, Callable, Sequence

Extract = Callable[[str], "str | None"]  # completion text -> the task's final answer
Same = Callable[[str, str], bool]  # do two extracted answers count as one vote

FALLBACK_STRATEGY = "Solve it step by step."
KINDS = ("answer", "choice", "verdict", "plan", "text")


@dataclasses.dataclass(frozen=True)
class Verdict:
  correct: bool
  feedback: str = ""


@dataclasses.dataclass(frozen=True)
class Parsed:
  """A role output after parsing and fallbacks.

  kind: what the call produced, one of KINDS; it decides how the call is
    scored ('answer': its answer is right; 'choice': it picked a right answer
    when one was shown; 'verdict': the verdict matches the truth of shown[0]).
  value: the usable output: the answer (answer), the chosen 0-based index or
    None for an own answer (choice), a Verdict (verdict), a tuple of
    strategies (plan), the text (text).
  answer: the final answer this call proposes, if any.
  shown: answers the call was shown (choice: the candidates; verdict: the
    judged one), for scoring.
  failures: failure names (module doc); empty when parsing went cleanly.
  """

  kind: str
  value: Any
  answer: str | None = None
  shown: tuple[str | None, ...] = ()
  failures: tuple[str, ...] = ()

  @property
  def status(self) -> str:
    return "+".join(self.failures) if self.failures else "ok"


def majority(answers: Sequence[str | None], same: Same = operator.eq) -> int | None:
  """Index of the first member of the largest group of `same` answers (ties: earliest).

  None answers do not vote; all None gives None.
  """
  leaders: list[int] = []  # first index of each group of equal answers
  votes: dict[int, int] = {}
  for i, a in enumerate(answers):
    if a is None:
      continue
    leader = next((j for j in leaders if same(answers[j], a)), None)
    if leader is None:
      leaders.append(leader := i)
    votes[leader] = votes.get(leader, 0) + 1
  return max(leaders, key=lambda j: (votes[j], -j)) if leaders else None


def answer(text: str, extract: Extract) -> Parsed:
  found = extract(text) if text.strip() else None
  return Parsed("answer", found, found, failures=() if found is not None else ("no_answer",))


_BARE_INDEX = re.compile(r"^\W*#?\s*(\d+)\s*[.)\]]?\s*$")
_NAMED_INDEX = re.compile(r"\b(?:candidate|solution|option|number|choice)\s*#?\s*(\d+)\b", re.I)


def choice(text: str, candidates: Sequence[str | None], extract: Extract,
           allow_own_answer: bool = False, same: Same = operator.eq) -> Parsed:
  """A pick among 1-based candidates; an answer reply is matched to a candidate.

  Order: a reply that is only a number in [1, N] is that candidate; else the
  last 'candidate/solution/option k' with k in range; else the task's answer
  in the reply, which selects the first candidate with the `same` answer or, when
  allow_own_answer (the synthesizer), stands as the call's own answer; else
  bad_choice and the majority vote of the candidates.
  """
  n, shown = len(candidates), tuple(candidates)
  stripped = text.strip()
  bare = _BARE_INDEX.match(stripped)
  named = [int(k) for k in _NAMED_INDEX.findall(stripped)]
  index = None
  if bare and 1 <= int(bare.group(1)) <= n:
    index = int(bare.group(1)) - 1
  elif named and 1 <= named[-1] <= n:
    index = named[-1] - 1
  if index is not None:
    return Parsed("choice", index, candidates[index], shown)
  found = extract(stripped) if stripped else None
  if found is not None:
    index = next((i for i, c in enumerate(candidates) if c is not None and same(c, found)), None)
    if index is not None:
      return Parsed("choice", index, candidates[index], shown)
    if allow_own_answer:
      return Parsed("choice", None, found, shown)
  index = majority(candidates, same)
  fallback = None if index is None else candidates[index]
  return Parsed("choice", index, fallback, shown, ("bad_choice",))


_VERDICT = re.compile(r"\b(not\s+correct|incorrect|correct)\b", re.I)


def verdict(text: str, judged: str | None) -> Parsed:
  """'correct' / 'incorrect: feedback' (first of the words in the reply decides)."""
  found = _VERDICT.search(text)
  if found is None:
    return Parsed("verdict", Verdict(True), shown=(judged,), failures=("no_verdict",))
  if found.group(1).lower() == "correct":
    return Parsed("verdict", Verdict(True), shown=(judged,))
  feedback = text[found.end():].lstrip(" \t:.-").strip()
  return Parsed("verdict", Verdict(False, feedback), shown=(judged,))


_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d+[.):]|strategy\s*\d*\s*[:.)-])\s*", re.I)


def strategies(text: str, m: int) -> Parsed:
  """M strategies, one per non-empty line (bullets and numbering removed)."""
  lines = [_BULLET.sub("", line).strip() for line in text.splitlines()]
  lines = [line for line in lines if line]
  failures = ("too_few",) if len(lines) < m else ("too_many",) if len(lines) > m else ()
  plan = tuple(lines[:m]) + (FALLBACK_STRATEGY,) * max(0, m - len(lines))
  return Parsed("plan", plan, failures=failures)


def text_output(text: str) -> Parsed:
  """Free text, for user-defined roles with nothing to parse."""
  return Parsed("text", text.strip())
