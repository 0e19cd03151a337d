"""Sweeps: expansion into named runs, run configs and overrides, the local runner, resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from configs import sweeps
from marl_jax.study import sweep
from marl_jax.trainer import config as config_lib
from tests.helpers import REPO

ROOT = REPO

# Stands in for launch/train.py: writes config.json and one metrics record per step
# (resuming after the last one); fails half-way when $FAKE_FAIL names the run;
# sleeps first when $FAKE_SLEEP says so.
_FAKE_TRAIN = r"""
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
workdir, steps = args["workdir"], int(args.get("config.train.steps", 60))
os.makedirs(workdir, exist_ok=True)
with open(os.path.join(os.path.dirname(workdir), "launches.txt"), "a") as f:
  f.write(os.path.basename(workdir) + "\n")
json.dump({"argv": sys.argv[1:], "xla_cache": os.environ.get("JAX_COMPILATION_CACHE_DIR")},
          open(os.path.join(workdir, "config.json"), "w"))
if hasattr(os, "sched_getaffinity"):
  json.dump(sorted(os.sched_getaffinity(0)), open(os.path.join(workdir, "cpus.json"), "w"))
path = os.path.join(workdir, "metrics.jsonl")
done = sum(1 for _ in open(path)) if os.path.exists(path) else 0
fail = os.environ.get("FAKE_FAIL") == os.path.basename(workdir)
import time; time.sleep(float(os.environ.get("FAKE_SLEEP", 0)))
with open(path, "a") as f:
  for step in range(done, steps + 1):
    if fail and step == 2:
      sys.exit(1)
    f.write(json.dumps({"step": step, "eval/accuracy": 0.1 + 0.1 * step}) + "\n")
"""


def _smoke(tmp_path, **axes):
  config = sweeps.get_config("smoke")
  for key, value in axes.items():
    config.axes[key] = value
  return config, sweep.expand(config, str(tmp_path))


def test_tiny_preset_is_the_full_tiny_matrix_with_readable_names(tmp_path):
  specs = sweep.expand(sweeps.get_config("tiny"), str(tmp_path))
  main = [s for s in specs if not s.name.endswith("_n1")]
  # Every point but single's isolated twins (one role: the same run as shared).
  assert len(main) == 4 * 2 * 3 * 2 * 2 - 2 * 3 * 2 and len(specs) == len(main) + 8
  assert not [s for s in specs if s.name.startswith("single-") and "-isolated-" in s.name]
  reference = sweep.run_config(
      specs[[s.name for s in specs].index("orch_workers-code-tiny_m-isolated-s1-orch_workers_n1")])
  assert reference.workflow.options.to_dict() == {"m": 1}  # claim 3's N = 1 reference
  names = [s.name for s in specs]
  assert len(set(names)) == len(names) and "voting-math-tiny_m-shared-s0" in names
  spec = specs[names.index("orch_workers-code-tiny_l-isolated-s1")]
  assert spec.args == "workflow=orch_workers,task=code,model=tiny_l,policy=isolated,seed=1"
  assert spec.workdir == str(tmp_path / spec.name)
  config = sweep.run_config(spec)
  assert (config.workflow.name, config.task.family, config.model.preset,
          config.policy.mode, config.seed) == ("orch_workers", "code", "tiny_l", "isolated", 1)
  long = sweep.expand(sweeps.get_config("tiny_long"), str(tmp_path))
  assert len(long) == 3 * 2 * 2 and {sweep.run_config(s).train.steps for s in long} == {150}
  study = sweep.expand(sweeps.get_config("study"), str(tmp_path))
  assert len(study) == 84 and sweep.run_config(study[0]).rollout.batch_size == 64
  with pytest.raises(ValueError, match="preset"):
    sweeps.get_config("huge")


def test_mechanism_presets_differ_only_in_update_mechanics(tmp_path):
  runs = {m: sweep.expand(sweeps.get_config(f"mechanisms_{m}"), str(tmp_path))
          for m in sweeps.MECHANISMS}
  names = {m: [s.name for s in specs] for m, specs in runs.items()}
  # 2 workflows x 2 tasks x SP, IP x 3 seeds, plus an N = 1 reference per IP point;
  # the ablations are the reference's math runs.
  assert len(names["reference"]) == 24 + 12 and names["clean"] == names["joint"] == [
      n for n in names["reference"] if "-math-" in n]
  configs = {m: sweep.run_config(specs[names[m].index("voting-math-tiny_m-isolated-s2")])
             for m, specs in runs.items()}
  ref, clean, joint = (configs[m].rl for m in sweeps.MECHANISMS)
  assert (ref.update_scheme, ref.schedule_ticks, ref.schedule_tail, ref.dual_clip,
          ref.weight_decay) == ("reference", "update", "periodic", 3.0, 0.01)
  assert (clean.update_scheme, clean.schedule_ticks, clean.schedule_tail) == (
      "reference", "iteration", "clamp")
  assert (joint.update_scheme, joint.schedule) == ("joint", "constant")
  # A minibatch is one batch of episodes (8 problems x 8 samples), as the reference's.
  assert ref.minibatch_rows == clean.minibatch_rows == 64 == (
      configs["reference"].rollout.batch_size * configs["reference"].rollout.group_size)
  assert {configs[m].train.steps for m in configs} == {150}
  reference = sweep.run_config(runs["reference"][names["reference"].index(
      "orch_workers-math-tiny_m-isolated-s0-orch_workers_n1")])
  # Its base is warm-started on its own (m = 1) options, not the m = 3 run's.
  assert reference.workflow.options.to_dict() == {"m": 1} and reference.tiny.run_workflow_options


def test_overrides_are_typed_and_unknown_fields_are_named(tmp_path):
  config, specs = _smoke(tmp_path)
  run = sweep.run_config(specs[0])
  assert run.train.steps == 4 and run.model.init == "random" and run.eval.greedy is False
  config_lib.override(run, "rl.lr=5e-5")
  config_lib.override(run, "policy.lora_targets=('q', 'v')")
  assert run.rl.lr == 5e-5 and run.policy.lora_targets == ("q", "v")
  with pytest.raises(ValueError, match="rl.no_such_field"):
    config_lib.override(run, "rl.no_such_field=1")
  with pytest.raises(ValueError, match="workflow.options.n"):
    config_lib.override(run, "workflow.options.n=1")
  with pytest.raises(ValueError, match="train.steps"):
    config_lib.override(run, "train.steps=many")
  config.axes.seed = ()
  with pytest.raises(ValueError, match="axes.seed"):
    sweep.expand(config, str(tmp_path))


def test_variants_add_named_runs_to_matching_points(tmp_path):
  config = sweeps.get_config("smoke")
  config.axes.workflow = ("single", "voting")
  config.variants.g4 = {"when": "workflow=voting,policy=isolated",
                        "overrides": ("rollout.group_size=4",)}
  specs = sweep.expand(config, str(tmp_path))
  names = [s.name for s in specs]
  assert "voting-math-tiny_s-isolated-s0-g4" in names and len(specs) == 4  # no single IP
  variant = specs[names.index("voting-math-tiny_s-isolated-s0-g4")]
  assert sweep.run_config(variant).rollout.group_size == 4
  assert sweep.select(specs, "*-g4,single-*-shared-*") == [
      specs[names.index("single-math-tiny_s-shared-s0")], variant]
  config.variants.g4.when = "size=big"
  with pytest.raises(ValueError, match="variants.g4.when"):
    sweep.expand(config, str(tmp_path))


def test_excluded_points_and_their_variants_are_not_run(tmp_path):
  config = sweeps.get_config("smoke")
  config.axes.workflow = ("single", "voting")
  config.axes.seed = (0, 1)
  config.variants.g4 = {"when": "policy=isolated", "overrides": ("rollout.group_size=4",)}
  config.exclude = ("workflow=single,policy=isolated", "workflow=voting,seed=1")
  names = [s.name for s in sweep.expand(config, str(tmp_path))]
  assert names == ["single-math-tiny_s-shared-s0", "single-math-tiny_s-shared-s1",
                   "voting-math-tiny_s-shared-s0", "voting-math-tiny_s-isolated-s0",
                   "voting-math-tiny_s-isolated-s0-g4"]
  config.exclude = ("size=big",)
  with pytest.raises(ValueError, match=r"exclude\[0\] names \['size'\]"):
    sweep.expand(config, str(tmp_path))
  config.exclude = ("",)
  with pytest.raises(ValueError, match="sweep.exclude has an empty filter"):
    sweep.expand(config, str(tmp_path))


def test_commands_are_launch_train_with_config_args_and_overrides(tmp_path):
  _, specs = _smoke(tmp_path)
  command = specs[0].shell_command()
  assert command.startswith("python launch/train.py --config=configs/default.py:workflow=voting,")
  assert f"--workdir={tmp_path}/voting-math-tiny_s-shared-s0" in command
  assert "--config.train.steps=4" in command and "--config.model.init=random" in command
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "sweep.py"),
       "--sweep=configs/sweeps.py:smoke", f"--dir={tmp_path}", "--print_commands"],
      cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
  assert out == [s.shell_command() for s in specs]


def test_local_runner_runs_in_parallel_skips_finished_and_resumes(tmp_path):
  launcher = tmp_path / "fake_train.py"
  launcher.write_text(_FAKE_TRAIN)
  config, specs = _smoke(tmp_path / "sw", seed=(0, 1))
  steps = sweep.total_steps(specs)
  assert set(steps.values()) == {4}
  failing = "voting-math-tiny_s-isolated-s1"
  assert specs[-1].name == failing
  env = {**os.environ, "FAKE_FAIL": failing}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  messages = []
  codes = sweep.run_local(specs, 2, launcher=str(launcher), env=env, poll_s=0.05,
                          steps=steps, compilation_cache=str(tmp_path / "xla"), out=messages.append)
  assert codes[failing] == 1 and sum(codes.values()) == 1 and len(codes) == 4
  states = {s.name: sweep.status(s, 4) for s in specs}
  assert states[failing].state == "failed" and states[failing].step == 1
  assert {st.state for n, st in states.items() if n != failing} == {"done"}
  done = states["voting-math-tiny_s-shared-s0"]
  # Every run shares the sweep's compilation cache; an inherited one wins.
  assert json.load(open(os.path.join(specs[0].workdir, "config.json")))["xla_cache"] == str(
      tmp_path / "xla")
  assert sweep.with_compilation_cache({"JAX_COMPILATION_CACHE_DIR": "/mine"}, "/sweep") == {
      "JAX_COMPILATION_CACHE_DIR": "/mine"}
  assert sweep.with_compilation_cache({"A": "1"}, None) == {"A": "1"}
  assert (done.step, done.base, done.last) == (4, 0.1, pytest.approx(0.5))
  assert os.path.exists(tmp_path / "sw" / failing / sweep.LOG_FILE)
  # Second invocation: only the failed run is started, and it resumes at step 2.
  codes = sweep.run_local(specs, 2, launcher=str(launcher), poll_s=0.05, steps=steps,
                          out=messages.append)
  assert codes == {failing: 0}
  assert sweep.status(specs[-1], 4).state == "done"
  metrics = [json.loads(l) for l in open(tmp_path / "sw" / failing / "metrics.jsonl")]
  assert [r["step"] for r in metrics] == [0, 1, 2, 3, 4]
  assert sweep.run_local(specs, 1, launcher=str(launcher), steps=steps, out=messages.append) == {}
  launches = (tmp_path / "sw" / "launches.txt").read_text().split()
  assert sorted(launches) == sorted([s.name for s in specs] + [failing])
  table = sweep.status_table([sweep.status(s, 4) for s in specs])
  assert table.splitlines()[0].split() == ["run", "state", "step", "base", "acc", "last", "acc",
                                           "minutes"]
  # Each run's wall time: the failed run's is its second launch's.
  assert "4/4" in table and table.splitlines()[-1].endswith("run-minutes over 4 timed runs")
  assert table.splitlines()[-1].startswith("4 done; ")
  assert all(sweep.status(s, 4).minutes < 1 for s in specs)
  manifest = sweep.write_manifest(str(tmp_path / "sw"), config, specs)
  assert [r["name"] for r in json.load(open(manifest))["runs"]] == [s.name for s in specs]
  # A later --only subset adds to the manifest; the report still sees every run.
  sweep.write_manifest(str(tmp_path / "sw"), config, specs[-1:])
  assert sorted(r["name"] for r in json.load(open(manifest))["runs"]) == sorted(
      s.name for s in specs)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs sched_setaffinity and two CPUs")
def test_parallel_runs_each_get_their_own_share_of_the_cpus(tmp_path):
  launcher = tmp_path / "fake_train.py"
  launcher.write_text(_FAKE_TRAIN)
  _, specs = _smoke(tmp_path / "sw", seed=(0, 1))
  mine = os.sched_getaffinity(0)

  def cpus_of_runs(**kwargs):
    sweep.run_local(specs, 2, launcher=str(launcher), poll_s=0.05, out=lambda m: None, **kwargs)
    cpus = [set(json.load(open(os.path.join(s.workdir, "cpus.json")))) for s in specs]
    for spec in specs:
      shutil.rmtree(spec.workdir)
    return cpus

  cpus = cpus_of_runs()
  # The first two start together, on disjoint halves; later runs take a freed half.
  assert not cpus[0] & cpus[1] and cpus[0] | cpus[1] == mine
  assert all(c in (cpus[0], cpus[1]) for c in cpus)
  assert cpus_of_runs(pin_cpus=False) == [mine] * len(specs)
  assert sweep.cpu_slots(1) is None and sweep.cpu_slots(len(mine) + 1) is None


def test_a_run_that_is_already_running_is_not_started_twice(tmp_path):
  launcher = tmp_path / "fake_train.py"
  launcher.write_text(_FAKE_TRAIN)
  _, specs = _smoke(tmp_path / "sw")
  busy = specs[0]
  os.makedirs(busy.workdir)
  other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", busy.workdir])
  try:
    sweep._write_state(busy.workdir, state="running", pid=other.pid)
    assert sweep.status(busy, 4).state == "running"
    messages = []
    codes = sweep.run_local(specs, 1, launcher=str(launcher), poll_s=0.05, out=messages.append)
    assert list(codes) == [specs[1].name]
    assert any(m.startswith(f"skipping {busy.name}: already running as pid {other.pid}")
               for m in messages)
  finally:
    other.kill()
    other.wait()
  # A dead pid (or, on Linux, a live one that is not this run's) is not running.
  assert sweep.status(busy, 4).state == "pending"
  sweep._write_state(busy.workdir, state="running", pid=os.getpid())
  assert sweep.status(busy, 4).state == ("pending" if os.path.exists("/proc/self") else "running")


def test_sigterm_stops_the_runner_and_its_runs(tmp_path):
  launcher = tmp_path / "fake_train.py"
  launcher.write_text(_FAKE_TRAIN)
  root = tmp_path / "sw"
  script = (f"import sys; sys.path.insert(0, {ROOT!r})\n"
            "from configs import sweeps; from marl_jax.study import sweep\n"
            f"specs = sweep.expand(sweeps.get_config('smoke'), {str(root)!r})\n"
            f"sweep.run_local(specs, 2, launcher={str(launcher)!r}, poll_s=0.05)\n")
  runner = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "FAKE_SLEEP": "60"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  specs = sweep.expand(sweeps.get_config("smoke"), str(root))
  deadline = time.time() + 60
  while not all(sweep.status(s, 4).state == "running" for s in specs):
    assert time.time() < deadline and runner.poll() is None, runner.stdout.read()
    time.sleep(0.1)
  pids = [sweep._read_state(s.workdir)["pid"] for s in specs]
  runner.send_signal(signal.SIGTERM)
  assert runner.wait(timeout=30) != 0
  for spec, pid in zip(specs, pids):
    assert sweep._read_state(spec.workdir)["state"] == "interrupted"
    assert not sweep._alive(pid, spec.workdir)


def test_publish_copies_finished_results_without_checkpoints_and_they_count_as_done(tmp_path):
  config, specs = _smoke(tmp_path / "sweep", policy=("shared", "isolated"))
  steps = sweep.total_steps(specs)
  finished, partial = specs
  for spec, last in ((finished, steps[finished.name]), (partial, 1)):
    os.makedirs(os.path.join(spec.workdir, "rollouts"))
    os.makedirs(os.path.join(spec.workdir, "checkpoints", "4"))
    json.dump({"seed": 0}, open(os.path.join(spec.workdir, "config.json"), "w"))
    with open(os.path.join(spec.workdir, "metrics.jsonl"), "w") as f:
      f.writelines(json.dumps({"step": s, "eval/accuracy": 0.5}) + "\n" for s in range(last + 1))
    for step in (1, 2, 3, 4, 10):
      open(os.path.join(spec.workdir, "rollouts", f"step_{step}.jsonl"), "w").write("{}\n")
  # which code ran it goes along (runs from before launches.jsonl publish without it)
  open(os.path.join(finished.workdir, "launches.jsonl"), "w").write('{"commit": "abc"}\n')
  out = tmp_path / "published"
  assert sweep.publish(specs, steps, str(out)) == [finished.name]
  files = sorted(os.path.relpath(os.path.join(d, f), out / finished.name)
                 for d, _, fs in os.walk(out / finished.name) for f in fs)
  assert files == ["config.json", "launches.jsonl", "metrics.jsonl", "rollouts/step_1.jsonl",
                   "rollouts/step_10.jsonl", "rollouts/step_2.jsonl", "rollouts/step_4.jsonl"]
  assert not (out / partial.name).exists()
  # The copy is a sweep directory: its runs are done there.
  moved = sweep.expand(config, str(out))
  assert sweep.status(moved[0], steps[finished.name]).state == "done"
