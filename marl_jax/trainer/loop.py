"""The training loop: multi-agent GRPO over a workflow, as a function of (config, workdir).

Each step: sample problems (a pure function of seed and step) -> rollout of
every role in batched stages -> verify -> advantages -> jitted updates ->
metrics, periodic evaluation, checkpoint. The RNG of a step is
fold_in(seed, step) and the data of a step is a function of the step, so a
run killed at any moment resumes from its last checkpoint and logs exactly
the metrics an uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from marl_jax.rl import batch as batch_lib
from marl_jax.rl import interventions
from marl_jax.rl import step_metrics
from marl_jax.rl import update
from marl_jax.tasks import sandbox
from marl_jax.tasks.sandbox import exposure
from marl_jax.trainer import build as build_lib
from marl_jax.trainer import checkpoints as checkpointing
from marl_jax.trainer import config as config_lib
from marl_jax.trainer import console
from marl_jax.trainer import distributed
from marl_jax.trainer import evaluate as evaluate_lib
from marl_jax.trainer import hostmem
from marl_jax.trainer import mechanics
from marl_jax.trainer import planner
from marl_jax.trainer import rundir
from marl_jax.trainer import writers as writers_lib
from marl_jax.workflows import episodes as episodes_lib
from marl_jax.workflows import rollout


class NonFiniteError(FloatingPointError):
  """A loss or gradient became NaN or Inf; the last good checkpoint is untouched."""


def loss_config(config: ml_collections.ConfigDict) -> update.LossConfig:
  """The update's static settings, rl.remat included; first checks by the planner's
  numbers that one row of the run's longest length fits this device (an accelerator
  that reports its memory), so a length that cannot fit fails before anything compiles."""
  rl_cfg = config.rl
  stats = jax.local_devices()[0].memory_stats() or {}
  planner.require_fit(config, stats.get("bytes_limit"), jax.device_count(), jax.process_count(),
                      usable=1.0)  # bytes_limit is what XLA may use already
  use_kl = bool(rl_cfg.kl_coef) or any(v for v in rl_cfg.kl_role_coefs.to_dict().values())
  return update.LossConfig(
      clip_low=rl_cfg.clip_low, clip_high=rl_cfg.clip_high, aggregation=rl_cfg.aggregation,
      constant=float(config.rollout.max_new_tokens), use_kl=use_kl,
      kl_estimator=rl_cfg.kl_estimator, temperature=config.rollout.temperature or 1.0,
      grad_clip=rl_cfg.grad_clip,
      # Configs saved before rl.remat existed ran without recompute.
      remat=rl_cfg.get("remat", "none"), dual_clip=float(rl_cfg.get("dual_clip", 0.0)))


@functools.partial(jax.jit, static_argnames=("base", "temperature"))
def _score(store, tokens, valid, route, trainable, *, base: bool, temperature: float):
  return store.token_logprobs(tokens, valid, route, trainable=trainable, reference=base,
                              temperature=temperature)[0]


def _reference_logp(run, arrays, route, init_trainable, loss_cfg: update.LossConfig):
  """Logprobs under the KL reference: the base (adapters off) or the initial policy."""
  reference = run.config.rl.kl_reference
  if reference not in ("base", "init"):
    raise ValueError(f"rl.kl_reference={reference!r} is unknown; valid: ('base', 'init').")
  # One module-level jitted function: a fresh jit wrapper per step recompiled every step.
  return _score(run.store.replace(trainable={}), arrays["tokens"], arrays["valid"], route,
                init_trainable, base=reference == "base", temperature=loss_cfg.temperature)


def _save_rollouts(workdir: str, step: int, episodes: list, tokenizer: Any,
                   keep: int = 64) -> None:
  """rollouts/step_<step>.jsonl: per episode its question, verdict and every call's
  prompt (as the model saw it, special tokens included), completion and parse."""
  os.makedirs(os.path.join(workdir, "rollouts"), exist_ok=True)
  path = os.path.join(workdir, "rollouts", f"step_{step}.jsonl")
  if os.path.exists(path):  # never rewritten: a resume normally cut it already
    rundir.keep_aside(path)
  with open(path + ".tmp", "w") as f:
    for episode in episodes[:keep]:
      f.write(json.dumps({
          "episode": episode.id, "group": episode.group, "question": episode.question,
          "reward": episode.reward, "final_answer": episode.final_answer,
          "verdict": episode.verdict,
          "calls": [{"role": c.role, "agent": c.agent, "turn": c.turn,
                     "prompt": tokenizer.decode(c.prompt_tokens, skip_special=False),
                     "text": c.text, "answer": c.answer, "parse": c.parse_status,
                     "correct": c.correct, "tokens": len(c.completion_tokens),
                     "truncated": bool(c.truncated),
                     "prompt_truncated": bool(c.prompt_truncated)}
                    for c in episode.calls]}, default=str) + "\n")
  os.replace(path + ".tmp", path)


def _check_finite(raw: dict, step: int, store) -> None:
  if bool(raw["finite"]):
    return
  norms = np.asarray(raw["slot_grad_norms"])
  bad = [s for s in range(len(norms)) if not np.isfinite(norms[s])]
  roles = [r for r in store.roles if any(s in store.routing.slots_of(r) for s in bad)]
  raise NonFiniteError(
      f"Non-finite loss or gradient at step {step} (loss={float(raw['loss'])}, "
      f"slots {bad or 'all'}, roles {roles or list(store.roles)}). The update was not "
      "applied; the last checkpoint is intact. Lower rl.lr or check the rewards.")


def _update_rows(run, batch, arrays, host, index, update_rows: int, parallel):
  """A minibatch's device arrays and routing: whole, or cut into update chunks
  of rows of similar length (rl.batch.length_chunks) from `host`, the step's
  arrays on the host (None when not chunking). On a mesh a chunk's rows are a
  multiple of the batch axes' devices (padding rows weigh nothing).
  """
  if host is None:
    return (batch_lib.select(arrays, index),
            run.store.route([batch.row_roles[i] for i in index]))
  mbs, routes = [], []
  copies = run.store.full_slots(batch.row_roles)  # one full copy per chunk (policies.route)
  for rows, length, padded in batch_lib.length_chunks(host["valid"], index, update_rows,
                                                      groups=copies,
                                                      multiple=parallel.row_multiple):
    mbs.append(parallel.put_rows(batch_lib.group_arrays(host, rows, length, padded)))
    roles = [batch.row_roles[i] for i in rows]
    routes.append(run.store.route(roles + [roles[0]] * (padded - len(roles))))
  return tuple(mbs), tuple(routes)


def rollout_batch(run, state, step: int, parallel: distributed.Parallel):
  """A step's rollout: (this process's episodes, every process's rows as a
  TrainBatch, the rollout's timings)."""
  config = run.config
  rollout_cfg, rl_cfg = config.rollout, config.rl
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
  problems = parallel.share(run.task.sample("train", rollout_cfg.batch_size, seed=config.seed,
                                             step=step))
  timings: dict[str, float] = {}
  with parallel.rollouts(run, state["trainable"]) as (rollout_run, trainable):
    store = rollout_run.store.replace(trainable=trainable)
    episodes = rollout.run(run.workflow, store, run.task, problems, rollout_cfg.group_size,
                           jax.random.fold_in(key, 0),
                           rollout.sampling_params(rollout_cfg, rollout_cfg.temperature),
                           run.tokenizer,
                           **rollout.options(config, slots=parallel.slots), timings=timings)
  batch = parallel.gather(batch_lib.build(
      episodes, run.store.roles, grouping=rl_cfg.grouping, reward_mode=rl_cfg.reward_mode,
      estimator=rl_cfg.estimator, normalize_std=rl_cfg.normalize_std,
      kl_coefs=rl_cfg.kl_role_coefs.to_dict(), default_kl=rl_cfg.kl_coef,
      rewards_of=run.rewards_of))
  return episodes, batch, timings


def update_batch(run, state, batch: batch_lib.TrainBatch, step: int, optimizer,
                 loss_cfg: update.LossConfig, init_trainable, parallel: distributed.Parallel,
                 monitor: mechanics.Monitor | None = None):
  """The update of one step's rows (`batch`, every process's): its optimizer steps by
  rl.update_scheme (trainer.mechanics) and their metrics, the per-slot figures
  included; `monitor` (one per run) carries what those need from step to step.
  Returns (state, metrics, tokens the update's programs processed)."""
  config = run.config
  rl_cfg = config.rl
  arrays = parallel.put_rows(batch.arrays())
  route = parallel.put_rows(run.store.route(batch.row_roles))
  if loss_cfg.use_kl:
    arrays["ref_logp"] = _reference_logp(run, arrays, route, init_trainable, loss_cfg)
  # rl.update_rows as resolved from device memory where left at 0 (Parallel.create)
  update_rows = rl_cfg.update_rows if parallel.update_rows is None else parallel.update_rows
  chunked = update_rows != 0  # below 0: length_chunks raises
  host = jax.device_get(arrays) if chunked else None  # once per step, for every minibatch
  role_grads = bool(rl_cfg.role_grad_every) and step % rl_cfg.role_grad_every == 0
  # no row is longer: programs compiled ahead stop at its length bucket
  longest = config.rollout.max_prompt_len + config.rollout.max_new_tokens
  # the update programs a run uses: with diagnostics every step, only the role_grads one
  warm = mechanics.warm_variants(run.store.routing, rl_cfg,
                                 {0: (False,), 1: (True,)}.get(rl_cfg.role_grad_every, (False, True)))
  # off unless config.interventions turns one on
  intervention_cfg = interventions.from_config(config, run.workflow)
  rng = np.random.default_rng([config.seed, step])
  parts, plan, processed = [], [], 0
  frozen = run.store.replace(trainable={})
  kl_base = {}
  if role_grads:  # before the update: the rollout's policy against the base
    kl_base = mechanics.kl_base(
        run.store, batch, host if host is not None else jax.device_get(arrays), update_rows,
        loss_cfg.temperature, rl_cfg.compile_ahead, longest,
        arrays["ref_logp"] if loss_cfg.use_kl and rl_cfg.kl_reference == "base" else None)
  started = mechanics.start(state, optimizer)
  chunk_rows = mechanics.chunk_rows(rl_cfg, update_rows, run.store.routing)  # per minibatch
  for _ in range(rl_cfg.epochs):
    for minibatch in mechanics.minibatch_plan(batch, run.store.routing, rl_cfg, rng):
      mb, mb_route = _update_rows(run, batch, arrays, host, minibatch.rows, chunk_rows,
                                  parallel)
      processed += sum(np.size(g["tokens"]) for g in (mb if isinstance(mb, tuple) else (mb,)))
      state, raw = parallel.apply_minibatch(
          state, frozen, mb, mb_route, cfg=loss_cfg, optimizer=optimizer,
          num_roles=len(run.store.roles),
          role_grads=mechanics.role_grads_of(minibatch, batch, role_grads),
          interventions=intervention_cfg, warm_role_grads=warm,
          compile_ahead=rl_cfg.compile_ahead, longest=longest,
          **mechanics.control(optimizer, minibatch, step))
      raw = jax.device_get(raw)
      _check_finite(raw, step, run.store)
      parts.append(raw)
      plan.append(minibatch)
  raw = mechanics.own_slot_norms(step_metrics.combine(parts), parts, plan)
  metrics = dict(kl_base)
  metrics.update(mechanics.figures(run.store.routing, optimizer, state, started, init_trainable,
                                   monitor or mechanics.Monitor(), parts, plan, step,
                                   build_lib.learning_rate(config)))
  metrics.update(step_metrics.name(raw, run.store.roles, run.store.routing))
  metrics.update(interventions.name_metrics(raw, run.store.roles))
  return state, metrics, processed


def rl_step(run, state, step: int, optimizer, loss_cfg: update.LossConfig, init_trainable,
               parallel: distributed.Parallel | None = None,
               monitor: mechanics.Monitor | None = None):
  """One RL step: rollout, then update_batch; returns (state, metrics, episodes).

  `par` spreads it over devices and processes (marl_jax.trainer.distributed): this
  process rolls out its share of the problems, the update sees every
  process's rows. Without it (one device) nothing changes.
  """
  rl_cfg = run.config.rl
  parallel = parallel or distributed.Parallel()
  t0 = time.perf_counter()
  episodes, batch, timings = rollout_batch(run, state, step, parallel)
  t1 = time.perf_counter()
  state, update_metrics, processed = update_batch(run, state, batch, step, optimizer, loss_cfg,
                                                  init_trainable, parallel, monitor)
  t2 = time.perf_counter()
  metrics = episodes_lib.role_metrics(episodes)
  metrics["accuracy"] = metrics.pop("accuracy/mean")
  metrics.update(update_metrics)
  gen_tokens = sum(len(c.completion_tokens) for e in episodes for c in e.calls)
  metrics.update({
      "reward_final/mean": float(batch.rewards_final.mean()),
      "reward_role/mean": float(batch.rewards_role.mean()),
      "time/rollout_s": t1 - t0, "time/update_s": t2 - t1,
      # generate_s, verify_s and verify_overlap_s (the verification that ran while
      # calls still decoded: rollout.schedule='episodes')
      **{f"time/{name}": seconds for name, seconds in timings.items()},
      # Real (non-padding) share of the tokens the update's programs process
      # (after rl.update_rows' length chunks), and of the batch padded whole.
      "update/valid_token_fraction": float(batch.valid.sum()) * rl_cfg.epochs / max(processed, 1),
      "update/valid_token_fraction_unchunked": float(batch.valid.mean()),
      "rollout_tokens_per_s": gen_tokens / max(t1 - t0, 1e-9),
      "update_tokens_per_s": float(batch.mask.sum()) * rl_cfg.epochs / max(t2 - t1, 1e-9)})
  return state, parallel.combine_metrics(metrics), episodes


def _start_over_or_refuse(config: ml_collections.ConfigDict, workdir: str,
                          ckpt: checkpointing.Checkpointer) -> checkpointing.Checkpointer:
  """No checkpoint is readable: a run that never committed one starts from 0; one
  that progressed is refused (rundir.not_resumable) unless train.restart=true,
  which archives its outputs first. Returns the Checkpointer to save with."""
  train_cfg = config.train
  failures = [(u.step, u.path, u.short())
              for u in ckpt.unreadable + checkpointing.set_aside_steps(ckpt.directory)]
  evidence = rundir.progress(workdir, [os.path.basename(path) for _, path, _ in failures],
                             max(1, min(train_cfg.checkpoint_every, train_cfg.steps)))
  if not evidence:
    return ckpt
  if not train_cfg.restart:
    raise rundir.not_resumable(workdir, evidence, sorted(failures))
  ckpt.close()
  if distributed.is_main():
    where = rundir.archive(workdir)
    logging.warning("train.restart=true: no checkpoint of %s could be read (%s); its outputs "
                    "were moved to %s and the run starts from step 0.", workdir,
                    "; ".join(evidence), where)
  if jax.process_count() > 1:  # the others open the checkpoint directory only once it moved
    multihost_utils.sync_global_devices("marl_jax_train_restart_archived")
  return checkpointing.Checkpointer(workdir, max_to_keep=train_cfg.keep_checkpoints, train=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       rewards_of: Callable[..., Any] | None = None) -> dict[str, float]:
  """Trains config's workflow end to end in workdir (resuming if it holds a run).

  rewards_of replaces how verified episodes become every call's (final, role)
  rewards (rl.batch.call_rewards). Returns the last evaluation's metrics.
  """
  config_lib.validate(config)  # before anything is written: a corrected rerun is the same run
  distributed.initialize(config.mesh.distributed)
  console.open_log(workdir, jax.process_index())  # library INFO: the file, not the console
  try:
    return _train(config, workdir, rewards_of)
  finally:
    console.close_log()  # a later run in this process (a notebook, a test) logs to its own file


def _train(config: ml_collections.ConfigDict, workdir: str,
           rewards_of: Callable[..., Any] | None) -> dict[str, float]:
  """train_and_evaluate's run, once its config is valid and its log file open."""
  hostmem.advise()
  if distributed.is_main():  # one writer on a shared run directory
    rundir.check_or_save_config(config, workdir)
    rundir.record_launch(workdir)
  run = build_lib.build(config)
  if run.task.kind == "code":  # model-written code will run: say how it is fenced in
    logging.info("%s", exposure.describe(sandbox.isolation()))
  if rewards_of is not None:
    run = dataclasses.replace(run, rewards_of=rewards_of)
  parallel = distributed.Parallel.create(config, run)
  run = parallel.place(run)
  train_cfg = config.train
  init_trainable = run.store.trainable
  state, optimizer = build_lib.train_state(config, run)
  state = parallel.place_state(state)
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=train_cfg.keep_checkpoints, train=True)
  writer = None
  try:
    start = 0
    restored = ckpt.restore(state)  # moves newer unreadable steps aside (checkpoints.py)
    if restored is not None:
      start, state, record = restored
      logging.info("Resuming %s from step %d (data position %s).", workdir, start,
                   record.get("data_position"))
      if train_cfg.restart:
        logging.warning("train.restart=true does nothing: step %d of %s is readable, so the run "
                        "resumes. Use a new --workdir to start over.", start, workdir)
    else:
      ckpt = _start_over_or_refuse(config, workdir, ckpt)
    if parallel.is_main:  # the steps this run redoes: their files are kept, not overwritten
      rundir.cut_rollouts(workdir, start)
    writer = writers_lib.open_writers(config, workdir, resume_step=start if restored else None)
    if start == 0:
      writer.write_hparams(rundir.config_dict(config))
    loss_cfg = loss_config(config)
    last_eval: dict[str, float] = {}
    if start == 0:
      with parallel.rollouts(run, state["trainable"]) as (eval_run, trainable):
        last_eval = evaluate_lib.evaluate(eval_run, trainable, slots=parallel.slots)
      writer.write(0, last_eval)
    progress = console.Progress(train_cfg.steps, start,
                                learning_rate=build_lib.learning_rate(config),
                                every=console.progress_every(config))
    preempted = False
    monitor = mechanics.Monitor()
    for step in range(start, train_cfg.steps):
      state, metrics, episodes = rl_step(run, state, step, optimizer, loss_cfg, init_trainable,
                                         parallel, monitor)
      done = step + 1
      if (train_cfg.save_rollouts_every and done % train_cfg.save_rollouts_every == 0
          and parallel.is_main):
        _save_rollouts(workdir, done, episodes, run.tokenizer)
      if done % train_cfg.eval_every == 0 or done == train_cfg.steps:
        with parallel.rollouts(run, state["trainable"]) as (eval_run, trainable):
          last_eval = evaluate_lib.evaluate(eval_run, trainable, slots=parallel.slots)
        metrics.update(last_eval)
      writer.write(done, metrics)
      progress.update(done, metrics, last_eval)
      ckpt.check()  # a failed asynchronous save stops the run now, naming its step
      preempted = parallel.preempted(done)  # every process saves at the same step, then stops
      if done % train_cfg.checkpoint_every == 0 or done == train_cfg.steps or preempted:
        ckpt.save(done, state, {"step": done, "data_position": done * config.rollout.batch_size})
      if preempted:
        break
  except BaseException:
    # A refusal, a failed save, a fault or an interrupt: the save in flight still
    # commits, and orbax's threads and the metric files are released now, not by
    # a garbage collection at some later moment (in a notebook or a test process).
    ckpt.abandon()
    if writer is not None:
      writer.close()
    raise
  ckpt.close()
  writer.close()
  if preempted:
    raise distributed.Preempted(f"Preempted after step {done}; its checkpoint is saved. "
                                "Rerun the same command to resume.")
  return last_eval
