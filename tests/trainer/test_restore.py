"""Per-role export: transformers and PEFT load it as it is and compute the routed policy."""

import json
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.models import get_preset, init_params, save_pretrained
from marl_jax.trainer import build, restore
from marl_jax.trainer.config import get_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

# A Qwen3-shaped model small enough to export in a second, with SmolLM2's real
# tokenizer (49,152 ids): the export must carry that tokenizer along.
CONFIG = get_preset("tiny_s").replace(vocab_size=49152, bos_id=1, eos_ids=(2,), pad_id=2,
                                      one_hot_embed=False)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, smollm2_gguf_path):
  path = str(tmp_path_factory.mktemp("base"))
  save_pretrained(CONFIG, init_params(CONFIG, jax.random.PRNGKey(0)), path)
  directory, name = os.path.split(smollm2_gguf_path)
  transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name).save_pretrained(path)
  with open(os.path.join(path, "config.json")) as f:  # as Qwen3's checkpoints are saved
    hf = json.load(f)
  hf["torch_dtype"] = hf["dtype"] = "bfloat16"
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf, f)
  return path


def _run(base_dir, policy):
  config = get_config(f"workflow=voting,policy={policy}")
  config.model.checkpoint, config.model.tokenizer = base_dir, ""
  config.policy.lora_rank = 4
  run = build.build(config)
  # Trained adapters: B is zero at init. Give it weight; A stays as initialised, so a
  # hybrid role slot's zero-padded columns stay zero, as training keeps them.
  def train(path, x):
    if path[-1].key != "b":
      return x
    seed = zlib.crc32(jax.tree_util.keystr(path).encode())
    key = jax.random.fold_in(jax.random.PRNGKey(1), seed)
    return x + 0.05 * jax.random.normal(key, x.shape, x.dtype)
  return run, jax.tree_util.tree_map_with_path(train, run.store.trainable)


def _logits(model, tokens):
  with torch.no_grad():
    return model(torch.as_tensor(tokens)).logits.float().numpy()


@pytest.mark.parametrize("policy", ["isolated", "hybrid"])
def test_export_loads_in_transformers_and_peft_and_matches_the_routed_policy(
    base_dir, tmp_path, policy):
  run, trainable = _run(base_dir, policy)
  out = str(tmp_path / "export")
  paths = restore.export_roles(run, trainable, out, dtype="float32")
  tokens = np.random.default_rng(0).integers(3, 1000, size=(1, 7))
  store = run.store.replace(trainable=trainable)
  base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
  for role, path in paths.items():
    route = jax.tree.map(jnp.asarray, store.route([role]))
    routed, _ = store.token_logprobs(jnp.asarray(tokens), jnp.ones(tokens.shape, bool), route)
    merged = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    logp = jax.nn.log_softmax(jnp.asarray(_logits(merged, tokens)[:, :-1]))
    picked = np.take_along_axis(np.asarray(logp), tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(picked, np.asarray(routed), atol=2e-4)
    # The role's adapter on the untouched base computes the same policy.
    with_adapter = peft.PeftModel.from_pretrained(base, os.path.join(path, "lora"))
    np.testing.assert_allclose(_logits(with_adapter, tokens), _logits(merged, tokens),
                               atol=2e-4)
    base = with_adapter.unload()  # PeftModel edits the base in place: take the adapter off
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    assert tokenizer.encode("2 + 2 = 4", add_special_tokens=False) == \
        run.tokenizer.encode("2 + 2 = 4")
    with open(os.path.join(path, "generation_config.json")) as f:
      assert json.load(f)["eos_token_id"] == 2


def test_export_keeps_the_checkpoint_dtype_and_refuses_to_overwrite(base_dir, tmp_path):
  run, trainable = _run(base_dir, "shared")
  out = str(tmp_path / "export")
  path = restore.export_roles(run, trainable, out)[run.store.roles[0]]
  with open(os.path.join(path, "config.json")) as f:
    assert json.load(f)["torch_dtype"] == "bfloat16"
  model = transformers.AutoModelForCausalLM.from_pretrained(path)
  assert next(model.parameters()).dtype == torch.bfloat16
  with pytest.raises(FileExistsError, match="not empty.*overwrite"):
    restore.export_roles(run, trainable, out)
  assert restore.export_roles(run, trainable, out, overwrite=True)


def test_vocabulary_larger_than_the_model_is_refused(base_dir, tmp_path):
  small = str(tmp_path / "small")
  save_pretrained(get_preset("tiny_s"), init_params(get_preset("tiny_s"), jax.random.PRNGKey(0)),
                  small)
  config = get_config("workflow=single")
  config.model.checkpoint, config.model.tokenizer = small, base_dir
  with pytest.raises(ValueError, match="49152 ids but the model has 128 embedding rows"):
    build.build(config)


def test_a_checkpoint_without_tokenizer_files_is_named(tmp_path):
  path = str(tmp_path / "no_tokenizer")
  save_pretrained(get_preset("tiny_s"), init_params(get_preset("tiny_s"), jax.random.PRNGKey(0)),
                  path)
  config = get_config("workflow=single")
  config.model.checkpoint, config.model.tokenizer = path, ""
  with pytest.raises(FileNotFoundError, match="no tokenizer files"):
    build.build(config)
