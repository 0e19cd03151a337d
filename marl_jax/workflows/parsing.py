"""Parsing of role outputs, each with a defined fallback and named failure counts.

Two styles, as the prompts (workflows.prompts): 'tiny' reads the short
replies of the tiny world's character models exactly as their bases were
trained on; 'instruct' reads the stated final line first and then ordinary
instruct-model phrasing. What each role is asked for and how it is read:

  role          tiny                        instruct (stated line, then tolerant)
  generator /   the task's own answer format (task.extract; math: see
  worker        tasks.math.checking.extract_answer's strictness)
  aggregator    a number k of a candidate,  'CHOICE: k'; then a reply that is
                or an answer                only k; 'best answer is k', 'I choose
                                            k', 'candidate k is correct', '**k**';
                                            then an answer equal to a candidate's;
                                            then 'candidate/solution k' mentions
  synthesizer   the same, or its own answer the same, or its own answer
  evaluator     'correct' / 'incorrect:     'VERDICT: correct|incorrect'; then the
                <feedback>' (first word     last decisive clause: 'correct',
                wins)                       'right', 'wrong', 'incorrect', 'not
                                            right', 'an error', 'no mistakes' (with
                                            negation; 'the correct answer is 72' is
                                            no verdict); then a leading Yes / No
  orchestrator  one strategy per line       the first numbered list ('1. ...'),
                                            preambles dropped; else bullets; else
                                            lines (headers ending in ':' dropped)

Failures (metric `parse/<role>/<failure>`), counted only when nothing usable
can be read, and what happens instead:
  empty       no text at all            the role's fallback below; no other failure
                                        is counted for the call
  truncated   no stop token within max_new_tokens: the text is parsed as is
  no_answer   generator/worker: the task finds no final answer; the call
              proposes none (no vote; reward 0 if it becomes final)
  bad_choice  aggregator/synthesizer: neither a candidate number nor an answer
              that can be used: fall back to the majority vote of the candidates
  no_verdict  evaluator: no verdict can be read: Verdict(correct=False,
              readable=False), so code that reads `.correct` never takes it for
              an approval; eval_opt's `unreadable_verdict` option decides what
              the episode does (stop or revise); scored as a wrong verdict
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
STYLES = ("tiny", "instruct")
# Feedback passed on to a refining generator: the end of the evaluator's reply.
MAX_FEEDBACK_CHARS = 1500


@dataclasses.dataclass(frozen=True)
class Verdict:
  """An evaluator's verdict. readable=False: none could be read (correct is then False)."""

  correct: bool
  feedback: str = ""
  readable: bool = True


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


def _check_style(style: str) -> None:
  if style not in STYLES:
    raise ValueError(f"parsing style {style!r} is unknown; use one of {STYLES}.")


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


# --- choices ----------------------------------------------------------------

_BARE_INDEX = re.compile(r"^\W*#?\s*(\d+)\s*[.)\]]?\s*$")
_NAMED_INDEX = re.compile(r"\b(?:candidate|solution|option|number|choice)\s*#?\s*(\d+)\b", re.I)
_NOUN = r"(?:candidate|solution|option|answer|program|response|choice|number|no\.)"
_MARK = r"[*_`\"'(\[]*"  # markdown and brackets around a number
_STATED_CHOICE = re.compile(rf"\bchoice\s*[*_`]*\s*[:=]\s*{_MARK}\s*(?:{_NOUN}\s*)?#?\s*(\d+)\b",
                            re.I)
_INTENT_CHOICE = tuple(re.compile(p, re.I) for p in (
    # 'The best answer is 2.', 'the most accurate one is candidate 3'
    rf"\b(?:best|most\s+(?:accurate|likely|plausible|reasonable|correct))\s+(?:{_NOUN}|one)?\s*"
    rf"(?:is|would\s+be|seems\s+to\s+be|appears\s+to\s+be)\s*:?\s*{_MARK}\s*(?:{_NOUN}\s*)?#?"
    r"\s*(\d+)\b(?![.,/]\d)",
    # 'the correct one is 2', 'the right candidate is solution 1' (not 'correct answer is 72')
    rf"\b(?:correct|right)\s+(?:one|candidate|solution|option|choice|program|response)\s+is\s*:?"
    rf"\s*{_MARK}\s*(?:{_NOUN}\s*)?#?\s*(\d+)\b(?![.,/]\d)",
    # 'I choose 2', "I'd go with candidate 1", 'Select option 3'
    rf"\b(?:choose|chose|pick|select|go\s+with|vote\s+for|prefer)\s*:?\s+(?:the\s+)?{_MARK}\s*"
    rf"(?:{_NOUN}\s*)?#?\s*(\d+)\b(?![.,/]\d)",
    # 'Candidate 2 is correct', 'solution 3 is the best' (a 'not' breaks the match)
    rf"\b{_NOUN}\s*#?\s*(\d+)\s*[*_`)\]]*\s+(?:is|seems|appears)\s+(?:to\s+be\s+)?(?:the\s+)?"
    r"(?:best|correct|right|most\s+\w+)\b",
    # '**2**', '**Candidate 2**', '**2.**'
    rf"\*\*\s*(?:{_NOUN}\s*)?[:#]?\s*(\d+)\s*[.)]?\s*\*\*",
))
_LAST_LINE_INDEX = re.compile(rf"^\W*(?:(?:final\s+)?(?:answer|{_NOUN})\s*[:#]?\s*)?#?\s*(\d+)"
                              r"\s*[.)\]*]*\s*$", re.I)
_LEADING_NUMBER = re.compile(r"^[\s*_$]*(-?\d[\d,]*(?:\.\d+)?)(?![\d.])")
_MENTION = re.compile(rf"\b(?:{_NOUN})\s*#?\s*(\d+)\b", re.I)


def _last_in_range(numbers: Sequence[str], n: int) -> int | None:
  for k in reversed(numbers):
    if 1 <= int(k) <= n:
      return int(k) - 1
  return None


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
# 'I pick the first one', 'the best is the second solution'
_ORDINAL_CHOICE = re.compile(
    r"\b(?:choose|chose|pick|select|go\s+with|vote\s+for|prefer|best\s+(?:one|answer|"
    r"candidate|solution|option|program)?\s*is)\s*:?\s+the\s+(" + "|".join(_ORDINALS)
    + r")\b", re.I)


def _intent_index(text: str, n: int) -> int | None:
  """The last in-range index of any intent phrase, by position in the text."""
  found = [(m.start(), m.group(1)) for p in _INTENT_CHOICE for m in p.finditer(text)]
  found += [(m.start(), str(_ORDINALS.index(m.group(1).lower()) + 1))
            for m in _ORDINAL_CHOICE.finditer(text)]
  return _last_in_range([k for _, k in sorted(found)], n)


def choice(text: str, candidates: Sequence[str | None], extract: Extract,
           allow_own_answer: bool = False, same: Same = operator.eq,
           style: str = "instruct") -> Parsed:
  """A pick among 1-based candidates; an answer reply is matched to a candidate.

  tiny: a reply that is only a number in [1, N] is that candidate; else the
  last 'candidate/solution/option k' with k in range; else the task's answer
  in the reply, which selects the first candidate with the `same` answer or, when
  allow_own_answer (the synthesizer), stands as the call's own answer; else
  bad_choice and the majority vote of the candidates.
  instruct: the last 'CHOICE: k' in range; a reply (or its first line) that
  is only k; the last intent phrase ('best answer is k', 'I choose k',
  'candidate k is correct', '**k**', 'I pick the second'); the task's answer
  as above; a last line that is only k ('Answer: 2'); the last
  'candidate/solution k' mention; else bad_choice as above.
  """
  _check_style(style)
  n, shown = len(candidates), tuple(candidates)
  stripped = text.strip()

  def picked(index):
    return Parsed("choice", index, candidates[index], shown)

  bare = _BARE_INDEX.match(stripped)
  bare_index = int(bare.group(1)) - 1 if bare and 1 <= int(bare.group(1)) <= n else None
  if style == "tiny":
    named = [int(k) for k in _NAMED_INDEX.findall(stripped)]
    index = bare_index
    if index is None and named and 1 <= named[-1] <= n:
      index = named[-1] - 1
    if index is not None:
      return picked(index)
  else:
    first = _BARE_INDEX.match(stripped.splitlines()[0]) if stripped else None  # '2\n...'
    for index in (_last_in_range(_STATED_CHOICE.findall(stripped), n), bare_index,
                  _last_in_range([first.group(1)] if first else [], n),
                  _intent_index(stripped, n)):
      if index is not None:
        return picked(index)
  found = extract(stripped) if stripped else None
  if found is not None:
    index = next((i for i, c in enumerate(candidates) if c is not None and same(c, found)), None)
    if index is not None:
      return picked(index)
    if allow_own_answer:
      return Parsed("choice", None, found, shown)
  if style == "instruct" and stripped:
    lead = _LEADING_NUMBER.match(stripped)  # '26, the final answer to ...'
    value = None if lead is None else extract(lead.group(1))  # read as the task reads answers
    index = None if value is None else next(
        (i for i, c in enumerate(candidates) if c is not None and same(c, value)), None)
    if index is not None:
      return picked(index)
    last = _LAST_LINE_INDEX.match(stripped.splitlines()[-1].strip())  # '...\nAnswer: 2'
    index = _last_in_range([last.group(1)] if last else [], n)
    if index is None:
      index = _last_in_range(_MENTION.findall(stripped), n)
    if index is not None:
      return picked(index)
  index = majority(candidates, same)
  fallback = None if index is None else candidates[index]
  return Parsed("choice", index, fallback, shown, ("bad_choice",))


# --- verdicts ---------------------------------------------------------------

_TINY_VERDICT = re.compile(r"\b(not\s+correct|incorrect|correct)\b", re.I)
_STATED_VERDICT = re.compile(r"\bverdict\b\s*[*_`]*\s*[:=\-]\s*(.*)$", re.I | re.M)
_POSITIVE = r"correct|right|accurate|valid"
_NEGATIVE = r"incorrect|wrong|inaccurate|invalid|mistaken|erroneous|flawed|false"
_VERDICT_WORD = re.compile(rf"\b(?:({_POSITIVE})|({_NEGATIVE}))\b", re.I)
# 'correct or incorrect', 'VERDICT: correct or VERDICT: incorrect': an echo of the prompt.
_ECHO = re.compile(rf"\b(?:{_POSITIVE}|{_NEGATIVE})\b[\s'\"*_`]*(?:or|/|\|)[\s'\"*_`]*"
                   rf"(?:verdict\s*:\s*)?[\s'\"*_`]*\b(?:{_POSITIVE}|{_NEGATIVE})\b", re.I)
_CLAUSE_BREAK = re.compile(r"[.!?;:\n,]|\b(?:but|however|although|though|while|whereas|"
                           r"because|since|so|therefore|thus|hence)\b", re.I)
# 'partially correct' is not an approval either.
_NEGATOR = re.compile(r"\b(?:not|never|hardly|no\s+longer|isn't|aren't|wasn't|weren't|"
                      r"doesn't|don't|cannot|can't|partially|partly|mostly|almost|nearly)\b|"
                      r"n't\b", re.I)
# ... or a condition, a check to make, or the prompt's 'say what is wrong'.
_CONDITIONAL = re.compile(r"\b(?:if|whether|check|verify|determine|see|unless|ensure|make\s+"
                          r"sure|what)\b", re.I)
# 'The correct answer is 4.': a verdict by comparison with the judged answer.
_STATES_ANSWER = re.compile(r"\b(?:correct|right|actual|true)\s+(?:final\s+)?answer\s+"
                            r"(?:to\s+(?:the|this)\s+(?:problem|question)\s+)?(?:is|should\s+be|would\s+be)\s*:?\s*(.{1,40}?)\s*(?:[.,;](?:\s|$)|$)",
                            re.I | re.M)
# A verdict word right before one of these is attributive ('the correct answer is 72'),
# unless a copula precedes it ('64 is not the correct answer').
_ATTRIBUTIVE = re.compile(r"\s+(?:final\s+)?(?:answer|solution|result|value|number|approach|"
                          r"method|way|calculation|formula|reasoning|total|amount|option|choice|"
                          r"one|step|steps|triangle|angle|side|track|units?|order|equation|"
                          r"expression|interpretation|procedure|answers|values|sum|product|"
                          r"count|response|program|code|output|time|direction|now|away|"
                          r"here|there|hand|corner|after|before)\b", re.I)
_SENTENCE_END = re.compile(r"[ \t]*(?:[.!\n]|$)")
_COPULA = re.compile(r"\b(?:is|are|was|were|be|'s)\b(?:\s+\w+){0,2}\s+(?:the|a|an)\s*$", re.I)
_ERROR_PHRASE = re.compile(
    r"\b(?P<none>no|without\s+any|not\s+any|n't\s+\w+\s+any|free\s+of)\s+(?:\w+\s+)?"
    r"(?:errors?|mistakes?)\b|\b(?:an?|one|some|two|several|the)\s+(?:\w+\s+){0,2}"
    r"(?:error|mistake)s?\b", re.I)
_YES_NO = re.compile(r"(?:^|[.!?\n])[\s*_]*(yes|no)\b(?=[\s*_]*(?:[.!,;:\n]|$))", re.I)


def _polarity(text: str) -> bool | None:
  """The last decisive verdict of ordinary phrasing, or None (see module doc)."""
  text = _ECHO.sub(" ", text)
  last: tuple[int, bool] | None = None
  for m in _VERDICT_WORD.finditer(text):
    before = text[:m.start()]
    breaks = list(_CLAUSE_BREAK.finditer(before))
    clause = before[breaks[-1].end():] if breaks else before
    after = text[m.end():]
    sentence_end = re.search(r"[.!?\n]", after)
    if sentence_end is not None and after[sentence_end.start()] == "?":
      continue  # a question, not a verdict
    if _CONDITIONAL.search(clause):
      continue
    noun = _ATTRIBUTIVE.match(after)
    if noun and not _COPULA.search(clause) and not (
        not clause.strip() and _SENTENCE_END.match(after[noun.end():])):  # 'Wrong answer.'
      continue
    positive = m.group(1) is not None
    window = " ".join(clause.split()[-4:])
    if _NEGATOR.search(window):
      positive = not positive
    last = (m.start(), positive)
  for m in _ERROR_PHRASE.finditer(text):
    clause_start = max([b.end() for b in _CLAUSE_BREAK.finditer(text[:m.start()])], default=0)
    if _CONDITIONAL.search(text[clause_start:m.start()]) or text[m.end():].lstrip()[:1] == "?":
      continue
    if last is None or m.start() > last[0]:
      last = (m.start(), m.group("none") is not None)
  for m in _YES_NO.finditer(text):  # 'Yes.' / 'No, ...' as a sentence of its own
    if last is None or m.start() > last[0]:
      last = (m.start(), m.group(1).lower() == "yes")
  return None if last is None else last[1]


def _feedback(text: str) -> str:
  return text.strip()[-MAX_FEEDBACK_CHARS:].strip()


def _stated_answer(text: str, judged: str | None, same: Same) -> bool | None:
  """'The correct answer is X': X the judged answer (True) or another (False); None if absent."""
  found = _STATES_ANSWER.findall(text)
  if not found or judged is None:
    return None
  return bool(same(found[-1].strip("$*` "), judged))


def _line_at(text: str, position: int) -> str:
  start = text.rfind("\n", 0, position) + 1
  end = text.find("\n", position)
  return text[start:] if end < 0 else text[start:end]


def verdict(text: str, judged: str | None, style: str = "instruct",
            same: Same = operator.eq) -> Parsed:
  """A verdict on the judged answer (module doc); unreadable: no_verdict, readable=False.

  tiny: the first of 'correct' / 'incorrect' / 'not correct' decides; the
  feedback is what follows it. instruct: the last 'VERDICT: ...' line, read
  by its first word or as a clause; else the last decisive clause of the
  reply or a 'Yes.' / 'No,' sentence; else a stated 'the correct answer is
  X', compared with the judged answer by `same` (the task's same_answer).
  Lines that echo the prompt ('VERDICT: correct' or 'VERDICT: incorrect')
  say nothing. The feedback of 'incorrect' is the reply without its verdict
  line (its last MAX_FEEDBACK_CHARS characters).
  """
  _check_style(style)
  shown = (judged,)
  if style == "tiny":
    found = _TINY_VERDICT.search(text)
    if found is None:
      return Parsed("verdict", Verdict(False, readable=False), shown=shown,
                    failures=("no_verdict",))
    if found.group(1).lower() == "correct":
      return Parsed("verdict", Verdict(True), shown=shown)
    feedback = text[found.end():].lstrip(" \t:.-").strip()
    return Parsed("verdict", Verdict(False, feedback), shown=shown)
  correct, rest = None, text
  for line in reversed(list(_STATED_VERDICT.finditer(text))):
    if _ECHO.search(_line_at(text, line.start())):
      continue
    said = line.group(1).strip(" \t*_`\"'[]().")
    first = re.match(r"(in\s*correct|not\s+correct|wrong|false|no|correct|right|true|yes)\b",
                     said, re.I)
    if first is not None and not _ECHO.match(said):
      correct = first.group(1).lower() in ("correct", "right", "true", "yes")
      reason = said[first.end():].lstrip(" \t:.-,").strip()
    else:
      correct, reason = _polarity(said), ""
    if correct is not None:
      rest = (text[:line.start()] + " " + reason).strip()
      rest = re.sub(r"(?:\*\*|#+|final)\s*$", "", rest, flags=re.I).strip()
      break
  if correct is None:
    correct = _polarity(text)
  if correct is None:
    correct = _stated_answer(text, judged, same)
  if correct is None:
    return Parsed("verdict", Verdict(False, _feedback(text), readable=False), shown=shown,
                  failures=("no_verdict",))
  return Parsed("verdict", Verdict(correct, "" if correct else _feedback(rest)), shown=shown)


# --- plans ------------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d+[.):]|strategy\s*\d*\s*[:.)-])\s*", re.I)
_NUMBERED = re.compile(r"^(\s*)(?:[*_#>]+\s*)?(?:(?:strategy|approach|method|option|idea)\s*)?"
                       r"\(?(\d+)\s*(?:[.):]|\*\*|\s-)\s*(.*)$", re.I)
_BULLETED = re.compile(r"^\s*[-*\u2022+]\s+(.*)$")
_PREAMBLE = re.compile(r"^(?:sure|certainly|of course|okay|ok|here\s+(?:are|is)|below)\b", re.I)


def _clean(item: str) -> str:
  item = _BULLET.sub("", re.sub(r"\*\*|__|`", "", item).strip()).strip()  # '1. 1. ...'
  return re.sub(r"^(?:strategy|approach|method|idea)\s*\d*\s*[:.)-]\s*", "", item,
                flags=re.I).strip().rstrip(":").strip()


def _plan_items(text: str) -> list[str]:
  """Strategies of an instruct reply: its first numbered list, else bullets, else lines."""
  numbered, indent = [], None
  for line in text.splitlines():
    m = _NUMBERED.match(line)
    if m is None or not _clean(m.group(3)) or (not numbered and m.group(2) != "1"):
      continue
    if indent is None:
      indent = len(m.group(1).expandtabs())
    if len(m.group(1).expandtabs()) > indent:
      continue  # a sub-item
    if numbered and int(m.group(2)) != len(numbered) + 1:
      break  # a second list (e.g. the steps of a solution after the plan)
    numbered.append(_clean(m.group(3)))
  if numbered:
    return numbered
  bullets = [_clean(m.group(1)) for m in map(_BULLETED.match, text.splitlines()) if m]
  if any(bullets):
    return [b for b in bullets if b]
  lines = [_clean(_BULLET.sub("", line)) for line in text.splitlines()
           if not re.sub(r"[\s*_]+$", "", line).endswith(":")]  # headers ('Strategies:')
  return [line for line in lines if line and not _PREAMBLE.match(line)]


def strategies(text: str, m: int, style: str = "instruct") -> Parsed:
  """M strategies: tiny, one per non-empty line (bullets and numbering removed);
  instruct, `_plan_items`."""
  _check_style(style)
  if style == "tiny":
    lines = [_BULLET.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
  else:
    lines = _plan_items(text)
  failures = ("too_few",) if len(lines) < m else ("too_many",) if len(lines) > m else ()
  plan = tuple(lines[:m]) + (FALLBACK_STRATEGY,) * max(0, m - len(lines))
  return Parsed("plan", plan, failures=failures)


def text_output(text: str) -> Parsed:
  """Free text, for user-defined roles with nothing to parse."""
  return Parsed("text", text.strip())
