"""Checkpoint import/export: config translation, the weight table, and clear errors on bad input."""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from marl_jax.models import CheckpointError, get_preset, load_pretrained, save_pretrained
from marl_jax.models.decoder import init_params
from marl_jax.models.hf_checkpoint import config_from_hf, config_to_hf
from marl_jax.models.weights import GGUF_TABLE, HF_TABLE, TRANSFORMS, export_tensors, load_params

CONFIG = get_preset("tiny_s")  # qwen3, tied, 2 layers, hidden 96, 4 heads x 24
WEIGHTS = "model.safetensors"


@pytest.fixture
def checkpoint(tmp_path):
  save_pretrained(CONFIG, init_params(CONFIG, jax.random.PRNGKey(0)), tmp_path)
  return tmp_path


def _edit_tensors(directory, edit) -> None:
  path = os.path.join(directory, WEIGHTS)
  tensors = load_file(path)
  edit(tensors)
  save_file(tensors, path, metadata={"format": "pt"})


def _edit_config(directory, edit) -> None:
  path = os.path.join(directory, "config.json")
  with open(path) as f:
    hf = json.load(f)
  edit(hf)
  with open(path, "w") as f:
    json.dump(hf, f)


def test_round_trip_keeps_config_and_params(checkpoint):
  config, params = load_pretrained(checkpoint)
  assert config == CONFIG.replace(one_hot_embed=False)  # a speed switch, not checkpoint state
  jax.tree.map(np.testing.assert_array_equal, params,
               init_params(CONFIG, jax.random.PRNGKey(0)))


def test_missing_config_json(checkpoint):
  os.remove(checkpoint / "config.json")
  with pytest.raises(FileNotFoundError, match=re.escape(str(checkpoint / "config.json"))):
    load_pretrained(checkpoint)


def test_missing_weights_file(checkpoint):
  os.remove(checkpoint / WEIGHTS)
  with pytest.raises(FileNotFoundError, match="neither model.safetensors nor"):
    load_pretrained(checkpoint)


def test_missing_path():
  with pytest.raises(FileNotFoundError, match="/no/such/dir"):
    load_pretrained("/no/such/dir")
  with pytest.raises(FileNotFoundError, match="/no/such/model.gguf"):
    load_pretrained("/no/such/model.gguf")


def test_missing_shard(tmp_path):
  save_pretrained(CONFIG, init_params(CONFIG, jax.random.PRNGKey(0)), tmp_path,
                  max_shard_bytes=50_000)
  shards = sorted(tmp_path.glob("model-*.safetensors"))
  assert len(shards) > 1
  os.remove(shards[-1])
  with pytest.raises(FileNotFoundError, match=re.escape(shards[-1].name)):
    load_pretrained(tmp_path)


def test_unknown_architecture(checkpoint):
  _edit_config(checkpoint, lambda hf: hf.update(architectures=["MistralForCausalLM"],
                                                model_type="mistral"))
  with pytest.raises(ValueError, match=r"MistralForCausalLM.*not supported.*Qwen3ForCausalLM"):
    load_pretrained(checkpoint)


def test_missing_tensor(checkpoint):
  _edit_tensors(checkpoint, lambda t: t.pop("model.layers.1.self_attn.k_norm.weight"))
  with pytest.raises(CheckpointError,
                     match=r"Missing tensor 'model\.layers\.1\.self_attn\.k_norm\.weight'"):
    load_pretrained(checkpoint)


def test_unexpected_tensor(checkpoint):
  _edit_tensors(checkpoint, lambda t: t.update(
      {"model.layers.0.mlp.extra.weight": np.zeros((3,), np.float32)}))
  with pytest.raises(CheckpointError,
                     match=r"Unexpected tensor 'model\.layers\.0\.mlp\.extra\.weight'"):
    load_pretrained(checkpoint)


def test_shape_mismatch_names_tensor_and_both_shapes(checkpoint):
  key = "model.layers.1.self_attn.q_proj.weight"
  _edit_tensors(checkpoint, lambda t: t.update({key: np.zeros((96, 97), np.float32)}))
  with pytest.raises(CheckpointError) as error:
    load_pretrained(checkpoint)
  message = str(error.value)
  assert key in message and "(96, 97)" in message and "(96, 96)" in message


def test_shape_mismatch_of_config_against_weights(checkpoint):
  _edit_config(checkpoint, lambda hf: hf.update(intermediate_size=300))
  with pytest.raises(CheckpointError,
                     match=r"gate_proj\.weight' has shape \(256, 96\).*\(300, 96\)"):
    load_pretrained(checkpoint)


def test_tied_checkpoint_may_store_lm_head_and_inv_freq(checkpoint):
  _edit_tensors(checkpoint, lambda t: t.update({
      "lm_head.weight": t["model.embed_tokens.weight"],
      "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones((12,), np.float32)}))
  config, params = load_pretrained(checkpoint)
  assert config.tie_embeddings and "lm_head" not in params


@pytest.mark.parametrize("field,value", [
    ("use_sliding_window", True), ("hidden_act", "gelu"), ("attention_bias", True),
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}),
])
def test_unsupported_config_fields(checkpoint, field, value):
  _edit_config(checkpoint, lambda hf: hf.update({field: value}))
  with pytest.raises(ValueError, match=field if field != "rope_parameters" else "yarn"):
    load_pretrained(checkpoint)


def test_config_from_hf_defaults_and_special_ids():
  base = dict(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4)
  llama = config_from_hf({**base, "architectures": ["LlamaForCausalLM"], "eos_token_id": 7,
                          "bos_token_id": 1}, generation={"eos_token_id": [7, 9]})
  assert (llama.head_dim, llama.num_kv_heads, llama.eos_ids, llama.pad_id, llama.bos_id,
          llama.max_position_embeddings) == (16, 4, (7, 9), 7, 1, 2048)
  # Qwen3 without head_dim uses transformers' class default, 128 (not hidden / heads).
  qwen3 = config_from_hf({**base, "model_type": "qwen3", "rope_theta": 3.0})
  assert (qwen3.head_dim, qwen3.rope_theta, qwen3.qk_norm, qwen3.eos_ids) == (128, 3.0, True, ())
  qwen2 = config_from_hf({**base, "architectures": ["Qwen2ForCausalLM"], "pad_token_id": 5,
                          "rope_scaling": {"type": "linear", "factor": 2.0}})
  assert qwen2.attention_bias and qwen2.pad_id == 5
  assert qwen2.rope_scaling_dict == {"rope_type": "linear", "factor": 2.0}
  with pytest.raises(ValueError, match="lacks 'hidden_size'"):
    config_from_hf({"model_type": "llama", "vocab_size": 5})


def test_config_to_hf_rejects_configs_without_a_transformers_class():
  with pytest.raises(ValueError, match="Qwen3ForCausalLM"):
    config_to_hf(CONFIG.replace(qk_norm=False))
  hf = config_to_hf(CONFIG.replace(rope_theta=321.0))
  assert hf["rope_parameters"] == {"rope_type": "default", "rope_theta": 321.0}
  assert config_from_hf(hf).rope_theta == 321.0


def test_export_rejects_params_that_do_not_fit(tmp_path):
  params = init_params(CONFIG, jax.random.PRNGKey(0))
  del params["layers"]["q_norm"]
  with pytest.raises(CheckpointError, match="layers/q_norm"):
    save_pretrained(CONFIG, params, tmp_path)
  params = init_params(CONFIG.replace(tie_embeddings=False), jax.random.PRNGKey(0))
  with pytest.raises(CheckpointError, match=r"params hold \['lm_head'\].*tie_embeddings=True"):
    save_pretrained(CONFIG, params, tmp_path)
  params = init_params(CONFIG.replace(hidden_size=64), jax.random.PRNGKey(0))
  with pytest.raises(CheckpointError, match=r"'embed' has shape \(128, 64\).*\(128, 96\)"):
    save_pretrained(CONFIG, params, tmp_path)


def test_gguf_unpermute_matches_transformers_and_inverts():
  from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
  config = get_preset("smollm2_135m").replace(num_heads=6, num_kv_heads=2, head_dim=8,
                                              hidden_size=40)
  processor = LlamaTensorProcessor({"num_attention_heads": 6, "num_key_value_heads": 2})
  rng = np.random.RandomState(0)
  for name, rows in (("q", 48), ("k", 16)):
    stored = rng.randn(rows, 40).astype(np.float32)
    transform = TRANSFORMS[f"gguf_unpermute_{name}"]
    ours = transform.to_param(stored, config)
    ref = processor.process(stored, f"blk.0.attn_{name}.weight").weights
    np.testing.assert_array_equal(ours, ref)
    assert not np.array_equal(ours, stored)
    np.testing.assert_array_equal(transform.to_checkpoint(ours, config), stored)
    # Qwen GGUFs are not permuted.
    np.testing.assert_array_equal(transform.to_param(stored, config.replace(
        architecture="qwen2")), stored)


class _DictSource:
  where = "<dict>"

  def __init__(self, tensors):
    self.tensors = tensors

  def keys(self):
    return self.tensors.keys()

  def shape(self, key):
    return self.tensors[key].shape

  def read(self, key):
    return self.tensors[key]


@pytest.mark.parametrize("table", [HF_TABLE, GGUF_TABLE], ids=["hf", "gguf"])
@pytest.mark.parametrize("preset", ["tiny_s", "smollm2_small"])
def test_every_table_inverts(table, preset):
  config = (get_preset("smollm2_135m").replace(num_layers=2, vocab_size=64, hidden_size=48,
                                               intermediate_size=80, num_heads=6, num_kv_heads=2,
                                               head_dim=8, tie_embeddings=False)
            if preset == "smollm2_small" else get_preset("tiny_s", attention_bias=True))
  params = init_params(config, jax.random.PRNGKey(1))
  tensors = export_tensors(table, config, params)
  if config.architecture == "llama":
    assert "lm_head.weight" in tensors or "output.weight" in tensors
  reloaded = load_params(table, config, _DictSource(tensors))
  jax.tree.map(np.testing.assert_array_equal, reloaded, params)


def test_gguf_unknown_architecture(tmp_path):
  import gguf
  path = str(tmp_path / "gemma.gguf")
  writer = gguf.GGUFWriter(path, "gemma")
  writer.add_block_count(1)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(ValueError, match=r"'gemma' is not supported; supported: \['llama'"):
    load_pretrained(path)
