"""The sandbox run by an ordinary user (the laptop case): no false passes,
and, where the kernel gives unprivileged user namespaces, no host effects.

The test forks, drops the child to `nobody`, and runs there as a trainer
would: a fresh pool of fork servers started as that user. Skipped where
this process cannot drop privileges, or `nobody` cannot run the interpreter.
"""

import concurrent.futures.thread  # noqa: F401 (imported before the child drops root)
import json
import os
import shutil
import tempfile
import textwrap

import pytest

from marl_jax.tasks.sandbox import runner as sandbox
from tests.tasks.sandbox import test_attacks_verdicts as verdict_attacks
from tests.tasks.sandbox.test_attacks import KILL_EVERYTHING

NOBODY = 65534

DELETE = """
    import os, shutil
    def f(path):
        done = False
        for action in (lambda: open(path, "w").write("x"), lambda: os.remove(path),
                       lambda: shutil.rmtree(os.path.dirname(path))):
            try:
                action()
                done = True
            except OSError:
                pass
        return done
"""


def _as_nobody(folder: str) -> dict:
  """Runs the attacks as `nobody` in a forked child; returns its findings."""
  sentinel = os.path.join(folder, "sentinel.txt")
  names = sorted(verdict_attacks.BATCH)
  verdicts = sandbox.run_tests_batch(
      [verdict_attacks.BATCH[n].job() for n in names], workers=4)
  found = {"passed": [n for n, v in zip(names, verdicts) if v.passed],
           "isolation": list(sandbox.isolation())}
  if "userns" not in found["isolation"]:
    return found  # kill(-1) would end this very process: nothing to shield it
  kill = sandbox.run_tests(textwrap.dedent(KILL_EVERYTHING), "assert f() == 2", 5)
  delete = sandbox.run_tests(textwrap.dedent(DELETE),
                             f"assert f({sentinel!r})", 5)
  with open(sentinel) as f:
    intact = f.read() == "intact"
  return dict(found, kill=kill.status, delete=delete.passed, intact=intact)


def _run_forked(folder: str) -> dict:
  read, write = os.pipe()
  pid = os.fork()
  if pid == 0:
    os.close(read)
    try:
      os.setgroups([])
      os.setresgid(NOBODY, NOBODY, NOBODY)
      os.setresuid(NOBODY, NOBODY, NOBODY)
      os.chdir("/")
      result = _as_nobody(folder)
    except PermissionError as e:
      result = {"skip": f"nobody cannot start the sandbox here ({e})"}
    except BaseException as e:  # pylint: disable=broad-except
      result = {"error": repr(e)[-2000:]}
    with os.fdopen(write, "w") as f:
      f.write(json.dumps(result))
    os._exit(0)  # pylint: disable=protected-access
  os.close(write)
  with os.fdopen(read) as f:
    text = f.read()
  _, status = os.waitpid(pid, 0)
  assert text, f"the unprivileged trainer died (wait status {status})"
  return json.loads(text)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
def test_an_ordinary_user_gets_no_false_passes_and_keeps_its_processes():
  folder = tempfile.mkdtemp(prefix="marl-user-", dir="/var/tmp"
                            if os.path.isdir("/var/tmp") else None)
  try:
    os.chmod(folder, 0o755)
    os.chown(folder, NOBODY, NOBODY)
    sentinel = os.path.join(folder, "sentinel.txt")
    with open(sentinel, "w") as f:
      f.write("intact")
    os.chown(sentinel, NOBODY, NOBODY)
    result = _run_forked(folder)
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  if "skip" in result:
    pytest.skip(result["skip"])
  assert "error" not in result, result
  assert result["passed"] == [], f"attacks passed as nobody: {result['passed']}"
  if "userns" not in result["isolation"]:
    pytest.skip("no user namespace for nobody here: its files and processes "
                f"are reachable by design (isolation: {result['isolation']})")
  assert result["kill"] == "failed"  # and the trainer survived to say so
  assert not result["delete"] and result["intact"], (
      "a sandboxed program changed the user's file")
