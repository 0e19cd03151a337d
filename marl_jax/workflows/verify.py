"""Scores a rollout's episodes: final answers, rewards and per-call correctness.

verify() makes one task.verify_batch call for any set of episodes; Background
runs it on a worker thread for GRPO groups handed over as they finish, so
verification (a code task's sandbox subprocesses) overlaps decoding.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Sequence

from marl_jax.tasks import Problem, Task
from marl_jax.tasks import rewards
from marl_jax.workflows.base import Workflow
from marl_jax.workflows.episodes import Episode, MissingCall

# A verdict call with one of these failures is scored wrong whatever its fallback did
# (eval_opt's unreadable_verdict decides only what the episode does next).
_SCORED_FAILURES = ("empty", "no_verdict")


def verify(episodes: list[Episode], workflow: Workflow, task: Task,
            problems: Sequence[Problem]) -> None:
  """Final answers, rewards and per-call correctness, from one batched verify call.

  A task scores raw text by extracting its answer, so each distinct (problem,
  answer) is verified once, through the text of the first call whose own
  text gave that answer (the answer string itself if none did).
  """
  texts: dict[tuple[int, str], str] = {}
  roles: dict[tuple[int, str], str] = {}  # who gave each answer first, for error messages
  for episode in episodes:
    try:
      episode.final_answer = workflow.final(episode, task)
    except MissingCall as e:
      raise MissingCall(e.role, workflow.missing(episode, "its final-answer rule", e.role)) \
          from None
    for call in episode.calls:
      if call.answer is not None and call.parsed.kind in ("answer", "choice") and (
          call.parsed.kind == "answer" or call.value is None):
        texts.setdefault((episode.group, call.answer), call.text)
        roles.setdefault((episode.group, call.answer), call.role)
  for episode in episodes:
    answers = [episode.final_answer]
    for call in episode.calls:
      answers += [call.answer, *call.parsed.shown]
    for answer in answers:
      if answer is not None:
        texts.setdefault((episode.group, answer), answer)
        roles.setdefault((episode.group, answer), "final answer")
  keys = list(texts)
  try:
    scores = (task.verify_batch([problems[g] for g, _ in keys], list(texts.values()))
              if keys else [])
  except rewards.RewardError as error:
    group, answer = keys[error.index]
    raise rewards.RewardError(
        f"{error} (problem {problems[group].id!r}, answer {answer!r} of the "
        f"{roles[(group, answer)]}); the step's update and checkpoint were not made.",
        error.index) from error
  reward = {key: float(score.reward) for key, score in zip(keys, scores)}
  verdicts = {key: {"status": score.status, "detail": score.detail}
              for key, score in zip(keys, scores)}
  for episode in episodes:
    group = episode.group
    score = lambda answer: 0.0 if answer is None else reward[(group, answer)]
    # Correct is the verifier's status, not a reward threshold: a reward function
    # of your own may give partial credit or penalties (tasks.rewards).
    ok = lambda answer: answer is not None and verdicts[(group, answer)]["status"] == "correct"
    episode.reward = score(episode.final_answer)
    episode.verdict = (verdicts[(group, episode.final_answer)]
                       if episode.final_answer is not None
                       else {"status": "unparsable", "detail": "the workflow gave no final answer"})
    for call in episode.calls:
      parsed = call.parsed
      if parsed.kind == "answer":
        call.correct = ok(call.answer)
      elif parsed.kind == "choice" and (ok(call.answer) or any(map(ok, parsed.shown))):
        call.correct = ok(call.answer)
      elif parsed.kind == "verdict":
        malformed = (any(f in parsed.failures for f in _SCORED_FAILURES)
                     or not getattr(parsed.value, "readable", True))
        call.correct = not malformed and parsed.value.correct == ok(parsed.shown[0])


class Background:
  """verify() on one worker thread, for episodes handed over while decoding goes on.

  Each job verifies every episode handed over and not yet verified when it
  starts, in one verify_batch call. An answer's key is (problem, answer), so
  verifying groups in separate calls scores them as one call would.
  """

  def __init__(self, workflow: Workflow, task: Task, problems: Sequence[Problem]):
    self.workflow, self.task, self.problems = workflow, task, problems
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="verify")
    self._lock = threading.Lock()
    self._ready: list[Episode] = []
    self._jobs: list[concurrent.futures.Future] = []

  def submit(self, episodes: Sequence[Episode]) -> None:
    """Hands over finished episodes (no call of theirs may change after this)."""
    with self._lock:
      self._ready += episodes
    self._jobs.append(self._pool.submit(self._drain))

  def _drain(self) -> tuple[float, float] | None:
    with self._lock:
      batch, self._ready = self._ready, []
    if not batch:
      return None
    start = time.perf_counter()
    verify(batch, self.workflow, self.task, self.problems)
    return start, time.perf_counter()

  def wait(self) -> list[tuple[float, float]]:
    """Waits for every job; their (start, end) times. A job's error (RewardError) is raised."""
    try:
      return [span for span in (job.result() for job in self._jobs) if span is not None]
    finally:
      self.close()

  def close(self) -> None:
    """Stops the worker; jobs not yet started are dropped (after an error elsewhere)."""
    self._pool.shutdown(wait=True, cancel_futures=True)
