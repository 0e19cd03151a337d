"""Logit parity with transformers for checkpoints we import and export (torch CPU, float32)."""

from __future__ import annotations

import copy
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from marl_jax.generate import sampler as sampling

from marl_jax.models import forward_logits, get_preset, load_pretrained, save_pretrained
from marl_jax.models.decoder import init_params

TOL = 1e-4
HF = {"qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
      "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
      "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM)}
VOCAB = 101


def make_hf_model(arch: str, seed: int = 0, **fields) -> torch.nn.Module:
  """A random transformers model; every weight (norms, biases too) drawn away from its init."""
  torch.manual_seed(seed)
  kwargs = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
  kwargs.update(copy.deepcopy(fields))  # transformers edits rope dicts in place
  model = HF[arch][1](HF[arch][0](**kwargs)).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_(1 + 0.2 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
  return model


def head_dim(hf: transformers.PretrainedConfig) -> int:
  return getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads


def tokens(batch: int = 2, length: int = 24, seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).randint(0, VOCAB, (batch, length))


def torch_logits(model: torch.nn.Module, ids: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(ids)).logits.numpy()


def our_logits(path, ids: np.ndarray) -> np.ndarray:
  config, params = load_pretrained(path)
  return np.asarray(forward_logits(config, params, jnp.asarray(ids)))


CASES = {
    "qwen3_tied_theta5000": ("qwen3", dict(tie_word_embeddings=True, head_dim=16,
                                           rope_theta=5000.0)),
    "qwen3_untied_hd8_6heads": ("qwen3", dict(tie_word_embeddings=False, num_attention_heads=6,
                                              num_key_value_heads=3, head_dim=8)),
    "qwen2_untied_mha": ("qwen2", dict(tie_word_embeddings=False, num_key_value_heads=4,
                                       rope_theta=30000.0)),
    "qwen2_tied_8heads": ("qwen2", dict(tie_word_embeddings=True, num_attention_heads=8,
                                        num_key_value_heads=2)),
    "llama_untied": ("llama", dict(tie_word_embeddings=False, rope_theta=500.0,
                                   rms_norm_eps=1e-5)),
    "llama_tied_hd24": ("llama", dict(tie_word_embeddings=True, head_dim=24)),
    "llama_linear_rope": ("llama", dict(rope_scaling={"rope_type": "linear", "factor": 3.0})),
    "llama_llama3_rope": ("llama", dict(head_dim=32, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_matches_transformers(case, tmp_path):
  arch, fields = CASES[case]
  model = make_hf_model(arch, **fields)
  model.save_pretrained(tmp_path)
  ids = tokens()
  ref = torch_logits(model, ids)
  assert np.abs(ref).max() > 1.0  # logits large enough for 1e-4 to mean something
  np.testing.assert_allclose(our_logits(tmp_path, ids), ref, rtol=0, atol=TOL)
  config, _ = load_pretrained(tmp_path)
  hf = model.config
  assert (config.architecture, config.tie_embeddings, config.head_dim, config.num_heads,
          config.num_kv_heads, config.rms_norm_eps) == (
              arch, hf.tie_word_embeddings,
              head_dim(hf),
              hf.num_attention_heads, hf.num_key_value_heads, hf.rms_norm_eps)
  assert config.rope_theta == hf.rope_parameters["rope_theta"]
  if "rope_scaling" in fields:
    assert config.rope_scaling_dict == fields["rope_scaling"]


def test_sharded_checkpoint_matches_transformers(tmp_path):
  model = make_hf_model("qwen3", tie_word_embeddings=False, head_dim=16)
  model.save_pretrained(tmp_path, max_shard_size="40KB")
  assert os.path.isfile(tmp_path / "model.safetensors.index.json")
  assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
  ids = tokens()
  np.testing.assert_allclose(our_logits(tmp_path, ids), torch_logits(model, ids), rtol=0, atol=TOL)


def _edit_config(path, edit) -> None:
  config_path = os.path.join(path, "config.json")
  with open(config_path) as f:
    hf = json.load(f)
  edit(hf)
  with open(config_path, "w") as f:
    json.dump(hf, f)


@pytest.mark.parametrize("layout", ["rope_parameters", "top_level"])
def test_rope_theta_is_used(layout, tmp_path):
  """Changing rope_theta in config.json changes our logits, exactly as it changes torch's."""
  model = make_hf_model("qwen3", head_dim=16)
  model.save_pretrained(tmp_path)
  ids = tokens(length=48)
  before = our_logits(tmp_path, ids)

  def set_theta(hf):
    if layout == "top_level":  # transformers 4.x layout
      del hf["rope_parameters"]
      hf["rope_theta"] = 123.0
    else:
      hf["rope_parameters"]["rope_theta"] = 123.0

  _edit_config(tmp_path, set_theta)
  after = our_logits(tmp_path, ids)
  assert load_pretrained(tmp_path)[0].rope_theta == 123.0
  assert np.abs(after - before).max() > 0.1
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
  assert reloaded.config.rope_parameters["rope_theta"] == 123.0
  np.testing.assert_allclose(after, torch_logits(reloaded, ids), rtol=0, atol=TOL)


@pytest.mark.parametrize("case", ["qwen3_tied_theta5000", "qwen2_untied_mha", "llama_llama3_rope"])
def test_export_loads_in_transformers(case, tmp_path):
  arch, fields = CASES[case]
  model = make_hf_model(arch, seed=1, **fields)
  model.save_pretrained(tmp_path / "hf")
  config, params = load_pretrained(tmp_path / "hf")
  ids = tokens(seed=1)
  ours = np.asarray(forward_logits(config, params, jnp.asarray(ids)))
  save_pretrained(config, params, tmp_path / "ours")
  exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
  assert type(exported) is type(model)
  np.testing.assert_allclose(torch_logits(exported, ids), ours, rtol=0, atol=TOL)
  config2, params2 = load_pretrained(tmp_path / "ours")
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_sharded_export_of_random_params(tmp_path):
  config = get_preset("tiny_s", eos_ids=(2, 5))
  params = init_params(config, jax.random.PRNGKey(0))
  save_pretrained(config, params, tmp_path, max_shard_bytes=100_000)
  with open(tmp_path / "model.safetensors.index.json") as f:
    weight_map = json.load(f)["weight_map"]
  assert len(set(weight_map.values())) > 1
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
  assert model.config.eos_token_id == [2, 5]
  ids = np.random.RandomState(0).randint(0, config.vocab_size, (2, 20))
  ours = np.asarray(forward_logits(config, params, jnp.asarray(ids)))
  np.testing.assert_allclose(torch_logits(model, ids), ours, rtol=0, atol=TOL)
  # Re-saving unsharded removes the old shards, so the reload cannot read stale weights.
  save_pretrained(config, params, tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "config.json", "generation_config.json", "model.safetensors"]


def test_bfloat16_load(tmp_path):
  make_hf_model("qwen2").save_pretrained(tmp_path)
  config, params = load_pretrained(tmp_path, dtype=jnp.bfloat16)
  assert config.param_dtype == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  _, params32 = load_pretrained(tmp_path)
  np.testing.assert_allclose(np.asarray(params["layers"]["q"], np.float32),
                             np.asarray(params32["layers"]["q"]), rtol=1e-2)


def test_smollm2_gguf_matches_transformers(smollm2):
  config, params, tokenizer, path = smollm2
  preset = get_preset("smollm2_135m")
  assert config == preset.replace(param_dtype=config.param_dtype,
                                  compute_dtype=config.compute_dtype)
  ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 17 * 3?"}])
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
  ref = torch_logits(model, np.array([ids]))
  ours = np.asarray(jax.jit(forward_logits, static_argnums=0)(config, params, jnp.array([ids])))
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3)
  np.testing.assert_array_equal(ours.argmax(-1), ref.argmax(-1))
  # 20 greedy tokens through our KV-cache sampler equal transformers' generate.
  with torch.no_grad():
    hf_out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            max_new_tokens=20, do_sample=False, eos_token_id=[999999],
                            pad_token_id=config.pad_id)
  hf_tokens = hf_out[0, len(ids):].tolist()
  gen = sampling.generate(config.replace(eos_ids=(999999,)), params, [ids], jax.random.PRNGKey(0),
                          sampling.SamplingParams(temperature=0.0, max_new_tokens=20))
  assert len(hf_tokens) == 20 and gen.completion(0) == hf_tokens


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """convert_hf_to_gguf.py's LlamaModel.permute (q/k rows to interleaved RoPE pairs)."""
  pairs = w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
  return pairs.swapaxes(1, 2).reshape(w.shape)


def write_gguf(model: torch.nn.Module, arch: str, path: str) -> None:
  """A float32 GGUF of a transformers model, named and permuted as llama.cpp's converter does."""
  import gguf
  hf = model.config
  writer = gguf.GGUFWriter(path, arch)
  writer.add_block_count(hf.num_hidden_layers)
  writer.add_context_length(hf.max_position_embeddings)
  writer.add_embedding_length(hf.hidden_size)
  writer.add_feed_forward_length(hf.intermediate_size)
  writer.add_head_count(hf.num_attention_heads)
  writer.add_head_count_kv(hf.num_key_value_heads)
  writer.add_key_length(head_dim(hf))
  writer.add_rope_dimension_count(head_dim(hf))
  writer.add_rope_freq_base(hf.rope_parameters["rope_theta"])
  writer.add_layer_norm_rms_eps(hf.rms_norm_eps)
  writer.add_vocab_size(hf.vocab_size)
  names = gguf.get_tensor_name_map(
      next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), hf.num_hidden_layers)
  for hf_name, tensor in model.state_dict().items():
    if hf_name == "lm_head.weight" and hf.tie_word_embeddings:
      continue
    base, suffix = hf_name.rsplit(".", 1)
    array = tensor.numpy().astype(np.float32)
    if arch == "llama" and base.endswith(("q_proj", "k_proj")):
      heads = hf.num_attention_heads if base.endswith("q_proj") else hf.num_key_value_heads
      array = _llama_cpp_permute(array, heads)
    writer.add_tensor(f"{names.get_name(base)}.{suffix}", array)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


@pytest.mark.parametrize("arch,fields", [
    ("llama", dict(num_attention_heads=8, num_key_value_heads=2, rope_theta=7000.0)),
    ("qwen2", dict(tie_word_embeddings=True)),
    # transformers' GGUF loader ignores qwen3's key_length and assumes head_dim 128.
    ("qwen3", dict(num_attention_heads=2, num_key_value_heads=1, head_dim=128)),
])
def test_written_gguf_matches_transformers(arch, fields, tmp_path):
  model = make_hf_model(arch, seed=2, **fields)
  path = str(tmp_path / f"{arch}.gguf")
  write_gguf(model, arch, path)
  ids = tokens(seed=2)
  ref = torch_logits(model, ids)
  np.testing.assert_allclose(our_logits(path, ids), ref, rtol=0, atol=TOL)
  loaded = transformers.AutoModelForCausalLM.from_pretrained(
      str(tmp_path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
  np.testing.assert_allclose(torch_logits(loaded, ids), ref, rtol=0, atol=TOL)
