"""Code tasks: program extraction from model text, and verification in the sandbox.

    extract_code("Here:\\n```python\\ndef f(x):\\n    return x\\n```")  # 'def f(x):\\n    return x'

The program a task runs is assembled from the extracted code and the
problem's `CodeReference` (a HumanEval prompt it completes, an import
prelude), then checked by `marl_jax.tasks.sandbox.runner`: test code, stdin/stdout
cases, or both. Untrusted code never runs in this process.
"""

import ast
import dataclasses
import re
from typing import Optional, Sequence

from marl_jax.tasks import base
from marl_jax.tasks.sandbox import runner as sandbox

PREFER = ("last", "first", "longest")
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = ("", "python", "py", "python3", "py3")


@dataclasses.dataclass(frozen=True)
class CodeReference:
  """What a code problem is checked against.

  tests: test code run against the program's names (asserts, `check(f)`).
  io_cases: (stdin, expected stdout) pairs; the program runs as a script.
  prompt_code: code the answer completes (HumanEval's prompt): the program
    is prompt_code + answer, unless the answer defines `entry_point` itself,
    in which case prompt_code (imports, helpers) comes first, then the answer.
  prelude: code placed before the answer (e.g. imports a judge provides).
  solution: a known-good answer, if the source has one.
  """
  tests: str = ""
  io_cases: tuple = ()
  entry_point: str = ""
  prompt_code: str = ""
  prelude: str = ""
  solution: str = ""

  def __post_init__(self):
    if not self.tests.strip() and not self.io_cases:
      raise ValueError("a CodeReference needs tests or io_cases")


def extract_code(text: str, prefer: str = "last",
                 require_fence: bool = False) -> Optional[str]:
  """The program in model text: a fenced block (Python-tagged ones first),
  else, unless `require_fence`, the raw text. None if there is none."""
  if prefer not in PREFER:
    raise ValueError(f"prefer must be one of {PREFER}, got {prefer!r}")
  if not isinstance(text, str):
    return None
  blocks = _FENCE.findall(text)
  python = [body for tag, body in blocks if tag.lower() in _PYTHON_TAGS]
  bodies = [b for b in (python or [body for _, body in blocks]) if b.strip()]
  if bodies:
    if prefer == "first":
      chosen = bodies[0]
    elif prefer == "longest":
      chosen = max(bodies, key=len)
    else:
      chosen = bodies[-1]
  elif require_fence or "```" in text:
    return None
  else:
    chosen = text
  chosen = re.sub(r"^\s*\n", "", chosen).rstrip()
  return chosen if chosen.strip() else None


def _defines(code: str, name: str) -> bool:
  try:
    tree = ast.parse(code)
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return False
  return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                               ast.ClassDef)) and node.name == name
             for node in tree.body)


def assemble_program(code: str, reference: CodeReference) -> str:
  """The program the sandbox runs for extracted `code` (see CodeReference)."""
  if reference.prompt_code:
    if reference.entry_point and _defines(code, reference.entry_point):
      code = reference.prompt_code.rstrip() + "\n\n\n" + code
    else:
      code = reference.prompt_code + code
  if reference.prelude:
    code = reference.prelude.rstrip() + "\n\n" + code
  return code + "\n"


def jobs_for(program: str, reference: CodeReference, timeout_s: float) -> list:
  """Sandbox jobs that must all pass: one for tests, one for io_cases."""
  jobs = []
  if reference.tests.strip():
    # The tests see only the named entry point of the program's namespace
    # (plus their own imports); without one, their free names.
    entry_points = (reference.entry_point,) if reference.entry_point else ()
    jobs.append(sandbox.Job(program, tests=reference.tests, timeout_s=timeout_s,
                            entry_points=entry_points))
  if reference.io_cases:
    jobs.append(sandbox.Job(program, io_cases=reference.io_cases,
                            timeout_s=timeout_s))
  return jobs


_STATUS = {"failed": "wrong", "timeout": "timeout", "error": "error"}


def score(verdicts: Sequence[sandbox.Verdict]) -> base.Score:
  """One Score from a problem's verdicts: correct only if all passed."""
  for verdict in verdicts:
    if not verdict.passed:
      return base.Score(0.0, _STATUS[verdict.status], verdict.detail)
  return base.Score(1.0, "correct", verdicts[0].detail if verdicts else "")


def _canonical(code: str) -> str:
  try:
    return ast.dump(ast.parse(code))
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return re.sub(r"\s+", "", code)


class CodeVerifier:
  """Extraction, voting equivalence and sandboxed scoring for code tasks."""

  kind = "code"

  def __init__(self, timeout_s: float = 10.0, prefer: str = "last",
               require_fence: bool = False,
               limits: Optional[sandbox.Limits] = None,
               workers: Optional[int] = None):
    if prefer not in PREFER:
      raise ValueError(f"prefer must be one of {PREFER}, got {prefer!r}")
    if not timeout_s > 0:
      raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    self.timeout_s, self.prefer, self.require_fence = timeout_s, prefer, require_fence
    self.limits, self.workers = limits, workers

  def extract(self, text: str) -> Optional[str]:
    return extract_code(text, self.prefer, self.require_fence)

  def same_answer(self, a: Optional[str], b: Optional[str]) -> bool:
    """Same program up to formatting and comments (equal syntax trees)."""
    if a is None or b is None:
      return False
    return _canonical(a) == _canonical(b)

  def verify(self, problem: base.Problem, text: str) -> base.Score:
    return self.verify_batch([problem], [text])[0]

  def verify_batch(self, problems: Sequence[base.Problem],
                   texts: Sequence[str]) -> list:
    """Runs every answer's jobs on one sandbox pool; scores per problem."""
    if len(problems) != len(texts):
      raise ValueError(f"verify_batch got {len(problems)} problems but "
                       f"{len(texts)} answers")
    scores, jobs, owners = [None] * len(problems), [], []
    for i, (problem, text) in enumerate(zip(problems, texts)):
      code = self.extract(text)
      if code is None:
        scores[i] = base.Score(0.0, "unparsable", "no code found")
        continue
      program = assemble_program(code, problem.reference)
      for job in jobs_for(program, problem.reference, self.timeout_s):
        jobs.append(job)
        owners.append(i)
    verdicts = sandbox.run_tests_batch(jobs, workers=self.workers,
                                       limits=self.limits)
    per_problem: dict = {}
    for owner, verdict in zip(owners, verdicts):
      per_problem.setdefault(owner, []).append(verdict)
    for owner, owned in per_problem.items():
      scores[owner] = score(owned)
    return scores


class CodeTask(CodeVerifier, base.LoadedTask):
  """A code task over problems loaded from a source."""

  def __init__(self, name: str, loaders: dict, **verifier_options):
    CodeVerifier.__init__(self, **verifier_options)
    base.LoadedTask.__init__(self, name, loaders)
