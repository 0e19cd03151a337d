"""Meshes, sharding rules and the multi-device / multi-process paths.

The sharded checks run tests/parallel/sharding_check.py in subprocesses with simulated
CPU devices (XLA's device count is fixed when jax starts; this suite runs on
one device) and assert on the JSON it prints.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from marl_jax.generate.sampler import Generation
from marl_jax.parallel import rules as sharding_rules
from marl_jax.parallel import sharding
from marl_jax.rl import batch as batch_lib
from marl_jax.trainer import distributed
from tests.helpers import REPO

CHECK = os.path.join(os.path.dirname(__file__), "sharding_check.py")
ROOT = REPO


def _env(devices: int) -> dict:
  flags = [os.environ.get("XLA_FLAGS"), f"--xla_force_host_platform_device_count={devices}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(filter(None, flags)))
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
  return env


def _last_json(out: str, err: str, what: str) -> dict:
  lines = [line for line in out.splitlines() if line.startswith("{")]
  assert lines, f"{what} printed no JSON; stderr tail:\n{err[-3000:]}"
  return json.loads(lines[-1])


def _check(*args: str, devices: int = 8, timeout: int = 300) -> dict:
  proc = subprocess.run([sys.executable, CHECK, *args], env=_env(devices), cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, f"{args} failed:\n{proc.stderr[-3000:]}"
  return _last_json(proc.stdout, proc.stderr, str(args))


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
  return _check("parity", str(tmp_path_factory.mktemp("ckpt")))


# --- sharded == single device (8 simulated devices) -------------------------

@pytest.mark.parametrize("name,axes", [("sp_lora", {"fsdp", "data"}),  # state_over_data
                                       ("ip_full", {"fsdp", "role"})])
def test_sharded_train_step_matches_one_device(parity, name, axes):
  train = parity[name]["train"]
  np.testing.assert_allclose(*train["loss"], rtol=1e-5)
  np.testing.assert_allclose(*train["grad_norms"], rtol=1e-5)
  assert train["moved"] > 1e-3  # the step really changed the policy ...
  assert train["trainable_diff"] < 1e-6  # ... identically on the mesh
  used = {axis for spec in train["state_specs"] for axis in sharding.MESH_AXES if axis in spec}
  assert used == axes and any("fsdp" in spec for spec in train["base_specs"])


@pytest.mark.parametrize("name,multiple", [("sp_lora", 8), ("ip_full", 4)])
def test_sharded_update_in_chunks_matches_the_whole_minibatch(parity, name, multiple):
  chunked = parity[name]["chunked"]  # rl.update_rows on a mesh: data x fsdp devices per chunk
  assert chunked["multiple"] == multiple and len(chunked["chunks"]) >= 2
  assert all(rows % multiple == 0 for rows, _ in chunked["chunks"])
  assert len({length for _, length in chunked["chunks"]}) == 2
  np.testing.assert_allclose(*chunked["loss"], rtol=1e-5)
  assert chunked["moved"] > 1e-3 and chunked["trainable_diff"] < 1e-6


def test_sharded_rollout_matches_one_device(parity):
  sp, ip = parity["sp_lora"]["rollout"], parity["ip_full"]["rollout"]
  for result in (sp["sp_lora"], ip["ip_full"]):  # same key: same tokens (sampled, greedy)
    assert result["tokens_equal"] and result["lengths_equal"]
    assert result["logp_diff"] < 1e-5
  assert sp["rollout_base_specs"] == ["P()"]  # replicated rollout copy (no fsdp gathers)
  assert any("fsdp" in spec for spec in ip["rollout_base_specs"])  # sharded rollout copy


def test_checkpoint_saved_on_fsdp8_restores_on_other_meshes(parity):
  ckpt = parity["checkpoint"]
  assert any("fsdp" in spec for spec in ckpt["saved_specs"])
  for name, devices in (("data2_fsdp4", 8), ("one_device", 1)):
    assert ckpt[name]["step"] == 3 and ckpt[name]["record"] == {"step": 3}
    assert ckpt[name]["diff"] == 0.0 and ckpt[name]["devices"] == devices
  assert ckpt["one_device"]["specs"] == ["single device"]


def test_training_loop_on_fsdp8_then_restores_on_one_device(tmp_path):
  from marl_jax.trainer import build  # pylint: disable=g-import-not-at-top
  from marl_jax.trainer import restore as checkpoint_io
  workdir = str(tmp_path / "run")
  out = _check("trainer", workdir)
  assert out["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1, "role": 1}
  assert out["rows_per_call"] == 8  # config.mesh.rollout_rows_per_device=1 x 8 devices
  assert any("fsdp" in spec for spec in out["saved_specs"])
  last = out["metrics"][-1]
  assert last["step"] == 1 and last["grad_norm/slot0"] > 0 and np.isfinite(last["loss"])
  run = build.build(checkpoint_io.load_config(workdir))  # this process: one device
  step, trainable = checkpoint_io.restore_trainable(run, workdir)
  assert step == 1
  sums = [float(np.sum(np.asarray(x, np.float64))) for x in jax.tree.leaves(trainable)]
  np.testing.assert_allclose(sums, out["saved_sums"], rtol=1e-6, atol=1e-9)
  assert sums != [float(np.sum(np.asarray(x, np.float64)))
                  for x in jax.tree.leaves(run.store.trainable)]


def test_reference_scheme_on_a_mesh_takes_the_one_device_steps(tmp_path):
  from marl_jax.trainer import loop as train  # pylint: disable=g-import-not-at-top
  from marl_jax.trainer.metrics import read_jsonl  # pylint: disable=g-import-not-at-top
  from tests.helpers import parity_rewards  # pylint: disable=g-import-not-at-top
  from tests.parallel.sharding_check import reference_config  # pylint: disable=g-import-not-at-top
  mesh = _check("reference", str(tmp_path / "mesh"), devices=4)
  assert mesh["mesh"] == {"data": 1, "fsdp": 2, "tensor": 1, "role": 2}
  assert any("role" in spec for spec in mesh["saved_specs"])  # the slots over role
  train.train_and_evaluate(reference_config(), str(tmp_path / "one"), rewards_of=parity_rewards)
  one = [r for r in read_jsonl(str(tmp_path / "one" / "metrics.jsonl")) if "loss" in r]
  on_mesh = [r for r in mesh["metrics"] if "loss" in r]
  assert len(one) == len(on_mesh) == 2
  for a, b in zip(one, on_mesh):
    # Each slot's own steps: the generators' 12 rows in 3 minibatches of 4, the aggregator 1.
    assert (a["opt_steps/generator"], a["opt_steps/aggregator"]) == (3, 1)
    for key in ("opt_steps/generator", "opt_steps/aggregator", "lr/generator",
                "lr/aggregator"):
      assert a[key] == b[key], key
    for key in ("loss", "update_norm/generator", "update_norm/aggregator",
                "drift/generator", "drift/aggregator", "kl_base/generator"):
      np.testing.assert_allclose(b[key], a[key], rtol=2e-4, atol=1e-7, err_msg=key)
  assert one[-1]["update_norm/generator"] > 0 and one[-1]["drift/aggregator"] > 0


def test_continuous_episodes_on_a_mesh_shard_the_slots_and_sample_as_one_device(tmp_path):
  from marl_jax.trainer import loop as train  # pylint: disable=g-import-not-at-top
  from marl_jax.trainer.metrics import read_jsonl  # pylint: disable=g-import-not-at-top
  from tests.helpers import parity_rewards  # pylint: disable=g-import-not-at-top
  from tests.parallel.sharding_check import continuous_config  # pylint: disable=g-import-not-at-top
  mesh = _check("continuous", str(tmp_path / "mesh"), devices=4)
  assert mesh["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1, "role": 1}
  assert mesh["cache_specs"] == ["P(('data', 'fsdp'),)"]  # 8 slots, two a device
  # The drain narrowed the decode to a prefix of 4 slots, still one a device.
  assert mesh["compactions"] >= 1
  train.train_and_evaluate(continuous_config(), str(tmp_path / "one"), rewards_of=parity_rewards)
  texts = lambda run: [[c["text"] for c in json.loads(line)["calls"]]
                       for line in open(tmp_path / run / "rollouts" / "step_1.jsonl")]
  assert texts("mesh") == texts("one")  # the same calls drew the same tokens
  one = [r for r in read_jsonl(str(tmp_path / "one" / "metrics.jsonl")) if "loss" in r][0]
  on_mesh = [r for r in mesh["metrics"] if "loss" in r][0]
  for key in ("update_norm/generator", "update_norm/aggregator", "grad_norm_mb/generator"):
    np.testing.assert_allclose(on_mesh[key], one[key], rtol=2e-4, err_msg=key)
  assert one["update_norm/generator"] > 0


def test_two_processes_split_rollouts_and_share_one_update(tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = str(s.getsockname()[1])
  procs = [subprocess.Popen([sys.executable, CHECK, "multiprocess", str(tmp_path), str(i), port],
                            env=_env(4), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  try:
    for proc in procs:
      out, err = proc.communicate(timeout=300)
      assert proc.returncode == 0, err[-3000:]
      outs.append(_last_json(out, err, "multiprocess"))
  finally:  # a hung collective must not outlive the test
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  assert [o["share"] for o in outs] == [[0, 1, 2, 3], [4, 5, 6, 7]]
  for o in outs:
    assert any("'fsdp', 'data'" in spec for spec in o["state_specs"])  # over both hosts
    assert o["local_mesh"] == {"data": 1, "fsdp": 4, "tensor": 1, "role": 1}
    assert o["rollout_tokens_equal"] and o["gather_equal"] and o["loss_finite"]
    assert o["gather_calls"] == [20, 20]  # 6 + 14 real calls, their rewards kept
    assert o["restored"] == [1, 0.0]
    assert o["metrics"] == {"episodes": 3.0, "accuracy": 0.5}  # counts add, means average
  assert outs[0]["moved"] > 1e-3 and outs[0]["train_diff"] < 1e-6  # == one local device


# --- rules, configs and helpers (this process, one device) ------------------

MESH = {"data": 2, "fsdp": 4, "tensor": 2, "role": 2}


def _spec(*names, shape):
  path = [jax.tree_util.DictKey(n) for n in names]
  return sharding_rules.partition_spec(path, shape, MESH)


def test_rules_place_base_lora_full_and_optimizer_leaves():
  assert _spec("layers", "q", shape=(28, 1024, 2048)) == P(None, "fsdp", "tensor")
  assert _spec("layers", "down", shape=(28, 3072, 1024)) == P(None, "tensor", "fsdp")
  assert _spec("embed", shape=(151936, 1024)) == P("tensor", "fsdp")
  assert _spec("layers", "attn_norm", shape=(28, 1024)) == P()
  assert _spec("lora", "layers", "q", "a", shape=(28, 1024, 128)) == P(None, "fsdp", "role")
  assert _spec("lora", "layers", "o", "b", shape=(28, 128, 1024)) == P(None, "role", "fsdp")
  assert _spec("full", "layers", "q", shape=(2, 28, 1024, 2048)) == P(
      "role", None, "fsdp", "tensor")
  # optax's mu / nu mirror the trainable tree, so they follow the same rules
  assert _spec("opt_state", "mu", "full", "layers", "up", shape=(2, 28, 1024, 3072)) == P(
      "role", None, "fsdp", "tensor")
  assert _spec("opt_state", "count", shape=()) == P()


def test_rules_replicate_where_a_dim_does_not_divide():
  assert _spec("layers", "k", shape=(28, 1024, 3)) == P(None, "fsdp")  # 3 kv columns
  assert _spec("full", "layers", "q", shape=(3, 28, 1024, 2048)) == P(
      None, None, "fsdp", "tensor")  # 3 slots on role=2
  assert sharding_rules.resolve(("batch",), (6,), MESH, sharding.TRAIN_RULES) == P("data")
  assert sharding_rules.resolve(("embed",), (96,), MESH, sharding.ROLLOUT_RULES) == P()


def test_mesh_config_defaults_and_errors():
  assert sharding.mesh_config({}, "tiny_s") == sharding.MeshConfig(data=-1)
  assert sharding.mesh_config({}, "qwen3_4b", num_processes=4) == sharding.MeshConfig(
      data=4, fsdp=-1, state_over_data=True)
  assert not sharding.mesh_config({"state_over_data": "no"}, "qwen3_4b").state_over_data
  assert sharding.mesh_config({"fsdp": 2}, "qwen3_4b").state_rules is (
      sharding.STATE_OVER_DATA_RULES)
  with pytest.raises(ValueError, match="config.mesh.state_over_data='maybe'"):
    sharding.mesh_config({"state_over_data": "maybe"}, "tiny_s")
  assert sharding.mesh_config({"fsdp": -1, "tensor": 2}, "qwen3_4b").resolve(8).sizes == {
      "data": 1, "fsdp": 4, "tensor": 2, "role": 1}
  with pytest.raises(ValueError, match="config.mesh.fsdp=-3"):
    sharding.MeshConfig(fsdp=-3)
  with pytest.raises(ValueError, match="several axes set to -1"):
    sharding.MeshConfig(data=-1, fsdp=-1)
  with pytest.raises(ValueError, match="uses 4 devices but 8 are available"):
    sharding.MeshConfig(data=2, fsdp=2).resolve(8)
  with pytest.raises(ValueError, match="do not divide"):
    sharding.MeshConfig(data=-1, fsdp=3).resolve(8)


def test_one_device_path_is_unchanged():
  par = distributed.Parallel()
  arrays = {"tokens": np.arange(6).reshape(2, 3)}
  placed = par.put_rows(arrays)
  assert not par.enabled and isinstance(placed["tokens"], jax.Array)
  run = object()
  with par.rollouts(run, "trainable") as (got, trainable):
    assert got is run and trainable == "trainable"
  x = jnp.ones((8, 4))
  assert sharding.constrain_rows(x, None) == (x, None)
  assert sharding.constrain_kv_cache((x, x)) == (x, x) and sharding.slot_axis(2) is None
  assert distributed.initialize("off") is False
  with pytest.raises(ValueError, match="config.mesh.distributed='maybe'"):
    distributed.initialize("maybe")


def test_multi_process_env_detection():
  assert not distributed.multi_process_env({})
  assert not distributed.multi_process_env({"TPU_WORKER_HOSTNAMES": "localhost"})
  assert distributed.multi_process_env({"TPU_WORKER_HOSTNAMES": "w0,w1"})
  assert distributed.multi_process_env({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234"})
  assert distributed.multi_process_env({"SLURM_NTASKS": "16"})
  assert not distributed.multi_process_env({"SLURM_NTASKS": "1"})


def test_share_and_pad_rows():
  assert distributed.share(list(range(6)), 1, 3) == [2, 3]
  with pytest.raises(ValueError, match="batch_size a multiple of the process count"):
    distributed.share(list(range(5)), 0, 2)
  arrays = {"tokens": np.array([[5, 6]]), "valid": np.array([[True, True]]),
            "mask": np.array([[True]]), "role": np.array([1])}
  padded = batch_lib.pad_rows(arrays, rows=2, length=4)
  np.testing.assert_array_equal(padded["tokens"], [[0, 0, 5, 6], [0, 0, 0, 0]])
  np.testing.assert_array_equal(padded["mask"], [[False, False, True], [False] * 3])
  np.testing.assert_array_equal(padded["role"], [1, 0])


class _FakeStore:
  def __init__(self):
    self.calls, self.options = [], []

  def generate(self, prompts, roles, rng, sampling_params, **options):
    self.calls.append((len(prompts), tuple(np.asarray(jax.random.key_data(rng)).ravel())))
    self.options.append(options)
    n = len(prompts)
    ids = np.array([p[0] for p in prompts])[:, None]
    return Generation(ids, np.zeros((n, 1)), np.ones(n, int), np.zeros(n, bool))

  def replace(self, **changes):
    return self


def test_chunked_policy_bounds_rows_per_sampler_call():
  store, key = _FakeStore(), jax.random.PRNGKey(0)
  policy = distributed.ChunkedPolicy(store, max_rows=4)
  out = policy.generate([[i] for i in range(10)], ["r"] * 10, key, None)
  np.testing.assert_array_equal(out.tokens[:, 0], np.arange(10))
  assert [n for n, _ in store.calls] == [4, 4, 2]
  assert len({k for _, k in store.calls}) == 3  # one key per chunk
  policy.generate([[1]], ["r"], key, None)  # fits: the store's own call, same key
  assert store.calls[-1][1] == tuple(np.asarray(jax.random.key_data(key)).ravel())
  assert isinstance(policy.replace(trainable={}), distributed.ChunkedPolicy)
  policy.generate([[i] for i in range(6)], ["r"] * 6, key, None, limits=np.arange(6), engine="x")
  assert [o["limits"].tolist() for o in store.options[-2:]] == [[0, 1, 2, 3], [4, 5]]
  assert store.options[-1]["engine"] == "x"  # one value for every row: passed as it is
  policy.generate([[i] for i in range(6)], ["r"] * 6, key, None, engine="continuous")
  assert store.calls[-1][0] == 6  # its slots bound the cache: the stage goes whole
  # Rows keyed by their ids keep the key: chunked, they draw what one call would draw.
  policy.generate([[i] for i in range(6)], ["r"] * 6, key, None, row_ids=np.arange(6) * 3)
  whole = tuple(np.asarray(jax.random.key_data(key)).ravel())
  assert [k for _, k in store.calls[-2:]] == [whole, whole]
  assert [o["row_ids"].tolist() for o in store.options[-2:]] == [[0, 3, 6, 9], [12, 15]]


def test_settings_a_mesh_ignores_are_named():
  from marl_jax.trainer.config import get_config
  config = get_config()
  config.rl.update_rows, config.rl.compile_ahead = 64, True
  ignored = distributed.mesh_ignored_settings(config)
  assert not any("update_rows" in s for s in ignored)  # update chunks work on a mesh
  assert any("rl.compile_ahead" in s for s in ignored)
  config.rl.update_rows, config.rl.compile_ahead = 0, False
  assert distributed.mesh_ignored_settings(config) == []
