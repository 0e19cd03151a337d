"""Our sampler's generated tokens/s against transformers' `generate`, same weights."""

from __future__ import annotations

import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from marl_jax.bench.smoke import forward_flops
from marl_jax.bench.timing import interleaved_median_seconds, median_seconds
from marl_jax.generate import sampler as sampling
from marl_jax.models import count_params, decoder, save_pretrained
from marl_jax.models import cpu_kernels
from marl_jax.models.config import ModelConfig
from marl_jax.models.cpu_kernels import selection


def matmul_floor_seconds(config: ModelConfig, params: Any, batch: int,
                         repeats: int = 5) -> float:
  """Seconds of one decode step's weight matmuls alone, at the decode batch.

  The products the sampler's decode step makes with these weights, in the
  layout it reads them (`sampling.decode_weights`: the fused q/k/v, o, fused
  gate/up and down per layer, then the LM head), with nothing else: no
  attention, norms, sampling or loop. At a small batch these skinny products
  are what bounds decode on a CPU, and both our sampler and torch's `generate`
  run them; the floor says how much of a step is left for everything else.
  """
  weights = sampling.decode_weights(config, params, batch)
  sizes = decoder.linear_shapes(config)

  @jax.jit
  def step(weights, x):
    for layer in weights["layers"]:
      x = decoder.project(decoder.project(x, layer["q+k+v"])[:, :sizes["o"][0]], layer["o"])
      x = decoder.project(decoder.project(x, layer["gate+up"])[:, :sizes["down"][0]],
                          layer["down"])
    return decoder.logits_from_hidden(config, weights, x)

  x = jnp.ones((batch, config.hidden_size))
  return median_seconds(lambda: step(weights, x), repeats)


def torch_model(config: ModelConfig, params: Any, gguf_path: str | None = None):
  """The transformers model holding the same weights (exported, or the same GGUF)."""
  import os
  import torch
  import transformers
  if gguf_path:
    return transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path),
        dtype=torch.float32).eval()
  with tempfile.TemporaryDirectory() as tmp:
    save_pretrained(config, params, tmp)
    return transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()


def compare_generate(name: str, config: ModelConfig, params: Any, batch: int,
                     new_tokens: int = 64, prompt_len: int = 24, repeats: int = 5,
                     gguf_path: str | None = None) -> dict[str, float]:
  """Tokens/s of both generators, sampling at temperature 1, exactly new_tokens each."""
  import torch
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, min(config.vocab_size, 100), size=(batch, prompt_len))
  never_stop = config.replace(eos_ids=())
  sp = sampling.SamplingParams(temperature=1.0, max_new_tokens=new_tokens)
  model = torch_model(config, params, gguf_path)
  ids = torch.as_tensor(prompts)

  def hf_generate():
    with torch.no_grad():
      return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                            temperature=1.0, top_k=0, max_new_tokens=new_tokens,
                            min_new_tokens=new_tokens, pad_token_id=config.pad_id)

  def ours_generate():
    return sampling.generate(never_stop, params, prompts.tolist(), next(keys), sp).tokens

  sides = {"ours": ours_generate, "theirs": hf_generate}
  kernels = {}
  if cpu_kernels.available():
    # Whether the sampler decodes on the CPU kernels here (cpu_kernels.selection:
    # measured on first use), and the same sampler the other way, for their share.
    chosen = isinstance(sampling.decode_weights(never_stop, params, batch)["layers"][0]["o"],
                        decoder.Packed)
    verdict = selection.read_verdicts(selection.cache_file()).get(
        selection.signature(never_stop, batch))
    kernels = {f"{name}/cpu_kernels_chosen": chosen,
               **({f"{name}/cpu_kernels_probe_speedup": verdict["speedup"]} if verdict else {})}

    def ours_the_other_way():
      with selection.forced(not chosen):
        return ours_generate()

    sides["other"] = ours_the_other_way
  keys = iter(jax.random.split(jax.random.PRNGKey(0), len(sides) * (repeats + 1)))
  seconds = interleaved_median_seconds(sides, repeats)
  ours, theirs = seconds["ours"], seconds["theirs"]
  if kernels:  # with the kernels over without, whichever the sampler chose
    with_, without = (ours, seconds["other"]) if chosen else (seconds["other"], ours)
    kernels[f"{name}/cpu_kernels_speedup"] = without / with_
  floor = new_tokens * matmul_floor_seconds(config, params, batch, repeats)
  tokens = batch * new_tokens
  # Model FLOPs: the prefill over the real prompt tokens (the LM head at each
  # row's last one, which samples the first token), then new_tokens - 1 decode
  # steps attending to the prompt and half the completion on average.
  prefill = forward_flops(config, batch * prompt_len, prompt_len / 2, lm_head_tokens=batch)
  decode = forward_flops(config, batch * (new_tokens - 1), prompt_len + new_tokens / 2)
  weight_bytes = 4 * count_params(config)  # float32, read once per decode step
  return {f"{name}/ours_tokens_per_s": tokens / ours,
          f"{name}/hf_generate_tokens_per_s": tokens / theirs,
          f"{name}/speedup_vs_hf": theirs / ours,
          # 1.0: a decode step costs no more than its weight matmuls alone.
          f"{name}/ours_fraction_of_matmul_floor": floor / ours,
          f"{name}/hf_fraction_of_matmul_floor": floor / theirs,
          f"{name}/prefill_gflop": prefill / 1e9,
          f"{name}/decode_gflop": decode / 1e9,
          f"{name}/flops_per_weight_byte": decode / (new_tokens - 1) / weight_bytes,
          f"{name}/sampler_gflops": (prefill + decode) / ours / 1e9,
          **kernels}
