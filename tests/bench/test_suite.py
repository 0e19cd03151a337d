"""launch/benchmark.py's runner: which benchmarks a run takes, and what reaches them."""

import pytest

from marl_jax.bench import suite


@pytest.fixture
def calls(monkeypatch):
  """The suite's benchmarks replaced by recorders (name -> (repeats, full)); the machine's
  peak and bandwidth probes by constants."""
  seen = {}

  def bench(name):
    def run(repeats, *full):
      seen[name] = (repeats, *full)
      return {f"{name}/figure": 1.0}
    return run

  monkeypatch.setattr(suite, "BENCHMARKS", {name: bench(name) for name in (
      "train_tiny", "rollout_long", "rollout_long_qwen3")})
  monkeypatch.setattr(suite, "_torch_threads", lambda: None)
  monkeypatch.setattr(suite, "matmul_peak_gflops", lambda: 100.0)
  monkeypatch.setattr(suite, "memory_bandwidth_gbs", lambda: 20.0)
  return seen


def test_a_run_of_every_benchmark_skips_the_accelerators_on_a_cpu(calls, capsys):
  results = suite.run([], repeats=3, full=True)
  assert calls == {"train_tiny": (3,), "rollout_long": (3, True)}
  assert "rollout_long_qwen3/figure" not in results and results["rollout_long/figure"] == 1.0
  assert "rollout_long_qwen3: skipped on a CPU" in capsys.readouterr().out


def test_an_accelerators_benchmark_runs_on_a_cpu_where_named(calls):
  suite.run(["rollout_long_qwen3"], repeats=2, full=False)
  assert calls == {"rollout_long_qwen3": (2, False)}
  with pytest.raises(ValueError, match="Unknown benchmarks"):
    suite.run(["rollout_long_qwen"])
