"""config.metrics.writers: one interface, a clear error per bad choice, wandb offline."""

import glob
import importlib.util
import os
import sys
import types

import pytest

from marl_jax.trainer import config as config_lib
from marl_jax.trainer import metrics as metrics_lib
from marl_jax.trainer import writers


def _config(*names, mode="offline"):
  config = config_lib.get_config()
  config.metrics.writers = tuple(names)
  config.metrics.wandb.mode = mode
  return config


def test_jsonl_and_tensorboard_as_chosen(tmp_path):
  both, only = tmp_path / "both", tmp_path / "only"
  for workdir, names in ((both, writers.DEFAULT), (only, ("jsonl",))):
    writer = writers.open_writers(_config(*names), str(workdir))
    writer.write_hparams({"rl.lr": 1e-4})
    writer.write(1, {"loss": 0.5})
    writer.close()
    assert metrics_lib.read_jsonl(str(workdir / "metrics.jsonl")) == [{"step": 1, "loss": 0.5}]
  assert (both / "tensorboard").is_dir() and not (only / "tensorboard").exists()


def test_an_unknown_writer_lists_the_valid_ones(tmp_path):
  with pytest.raises(ValueError, match=r"'tb'.*valid: \('jsonl', 'tensorboard', 'wandb'\)"):
    writers.open_writers(_config("jsonl", "tb"), str(tmp_path))
  with pytest.raises(ValueError, match="metrics.writers has \\['tb'\\]"):
    config_lib.validate(_config("jsonl", "tb"))  # before the run writes anything
  with pytest.raises(ValueError, match="must include 'jsonl'"):
    writers.open_writers(_config("tensorboard"), str(tmp_path))
  assert not os.listdir(tmp_path)


def test_wandb_chosen_but_not_installed_says_which_extra(tmp_path, monkeypatch):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "wandb" else find_spec(name, *a))
  monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
  with pytest.raises(ValueError) as error:
    writers.open_writers(_config("jsonl", "wandb"), str(tmp_path))
  line = [l for l in str(error.value).splitlines() if "wandb" in l]
  assert len(line) == 1 and "pip install 'marl_jax[wandb]'" in line[0]
  with pytest.raises(ImportError, match=r"^config.metrics.writers has 'wandb' but wandb is not "
                     r"installed: pip install 'marl_jax\[wandb\]'$"):
    writers.import_wandb()
  assert not os.listdir(tmp_path)


class _FakeRun:
  def __init__(self, **kwargs):
    self.kwargs, self.logged, self.config, self.finished = kwargs, [], types.SimpleNamespace(), False
    self.config.update = lambda values, allow_val_change: self.__dict__.setdefault(
        "hparams", dict(values))

  def log(self, values, step):
    self.logged.append((step, values))

  def finish(self):
    self.finished = True


def test_the_wandb_writer_logs_numbers_and_resumes_the_same_run(tmp_path, monkeypatch):
  runs = []
  fake = types.SimpleNamespace(init=lambda **kw: runs.append(_FakeRun(**kw)) or runs[-1])
  monkeypatch.setitem(sys.modules, "wandb", fake)
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
  config = _config("jsonl", "wandb", mode="offline")
  writer = writers.open_writers(config, str(tmp_path))
  writer.write_hparams({"rl.lr": 1e-4})
  writer.write(3, {"loss": 0.5, "note": "text", "vector": [1, 2], "nan": float("nan"), "n": 4})
  writer.close()
  run = runs[0]
  assert run.logged == [(3, {"loss": 0.5, "n": 4})] and run.finished
  assert run.kwargs["mode"] == "offline" and run.kwargs["dir"] == str(tmp_path)
  assert run.kwargs["config"]["rl"]["lr"] == config.rl.lr and run.hparams == {"rl.lr": 1e-4}
  writers.open_writers(config, str(tmp_path), resume_step=3).close()
  assert runs[1].kwargs["id"] == run.kwargs["id"] and runs[1].kwargs["resume"] == "allow"
  writers.open_writers(config, str(tmp_path)).close()  # from step 0: a new W&B run
  assert runs[2].kwargs["id"] != run.kwargs["id"]


def test_a_registered_writer_is_selectable(tmp_path, monkeypatch):
  seen = []

  class Memory:
    def write(self, step, metrics):
      seen.append((step, dict(metrics)))

    def write_hparams(self, hparams):
      del hparams

    def close(self):
      seen.append("closed")

  monkeypatch.setitem(writers._REGISTRY, "memory", None)  # pylint: disable=protected-access
  writers._REGISTRY.pop("memory")  # pylint: disable=protected-access
  writers.register("memory", lambda config, workdir, resume_step: Memory())
  assert "memory" in writers.names()
  writer = writers.open_writers(_config("jsonl", "memory"), str(tmp_path))
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert seen == [(1, {"loss": 1.0}), "closed"]
  with pytest.raises(ValueError, match="built in"):
    writers.register("jsonl", lambda *a: Memory())


def test_wandb_offline_writes_its_run_without_network(tmp_path, monkeypatch):
  wandb = pytest.importorskip("wandb")
  # Every address W&B could reach is a closed local port: offline must not need one.
  for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "WANDB_BASE_URL"):
    monkeypatch.setenv(name, "http://127.0.0.1:9")
  monkeypatch.setenv("WANDB_SILENT", "true")
  monkeypatch.delenv("WANDB_API_KEY", raising=False)
  writer = writers.open_writers(_config("jsonl", "wandb", mode="offline"), str(tmp_path))
  writer.write(1, {"loss": 0.5, "grad_cos/generator_vs_aggregator": 0.25})
  writer.close()
  wandb.teardown()  # its service writes the run's file until it stops
  run_id = (tmp_path / writers.WandbWriter.ID_FILE).read_text().strip()
  files = glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
  assert len(files) == 1
  data = open(files[0], "rb").read()
  assert b"grad_cos/generator_vs_aggregator" in data and b"loss" in data


def test_a_clu_style_writer_behind_the_interface():
  calls = []
  clu_like = types.SimpleNamespace(
      write_scalars=lambda step, scalars: calls.append(("scalars", step, scalars)),
      write_hparams=lambda hparams: calls.append(("hparams", hparams)),
      flush=lambda: calls.append("flush"), close=lambda: calls.append("close"))
  writer = writers.Writers([writers.CluWriter(clu_like)])
  writer.write_hparams({"rl.lr": 1e-4})
  writer.write(2, {"loss": 0.5, "note": "text", "flag": True})
  writer.close()
  assert calls == [("hparams", {"rl.lr": 1e-4}), ("scalars", 2, {"loss": 0.5}), "flush", "close"]
