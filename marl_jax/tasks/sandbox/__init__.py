"""Runs untrusted, model-written code in separate, resource-limited processes.

`run_tests(program, tests)` / `run_io_tests(program, cases)` give a `Verdict`;
`runner` holds the trainer side, `process` the fork servers' handle, `child/`
the code that runs inside the sandbox (started by path, never imported here).
"""

from marl_jax.tasks.sandbox.runner import (Job, Limits, Verdict, isolation, run, run_io_tests,
                                           run_tests, run_tests_batch)

__all__ = ["Job", "Limits", "Verdict", "isolation", "run", "run_io_tests", "run_tests",
           "run_tests_batch"]
