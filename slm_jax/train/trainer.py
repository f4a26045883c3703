"""The training run: mesh, model, optimizer, data, checkpoints, loop and run control (one readable function).

Rerunning the same command resumes from the latest complete checkpoint in `<workdir>/checkpoints` with the
params, optimizer state, step, label-token count and data-iterator state of every process, so the losses
continue exactly as if the run had not stopped. The run stops at the first of: `total_steps`, the token
budget (label tokens trained on), the wall-clock limit, SIGTERM / a cluster preemption notice (all of which
save a checkpoint), exhausted data, or a non-finite loss or gradient (which saves nothing and raises
`NonFiniteError`, leaving the last good checkpoint as the latest).
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time

import jax
import numpy as np

from slm_jax import sharding
from slm_jax.checkpoint import orbax_io
from slm_jax.checkpoint.tokenizer_files import save_tokenizer
from slm_jax.model.config import ModelConfig
from slm_jax.train import data as data_lib
from slm_jax.train import flops as flops_lib
from slm_jax.train import optimizer as opt_lib
from slm_jax.train import validate
from slm_jax.train.checkpointing import CHECKPOINT_DIR, Checkpointer
from slm_jax.train.lock import WorkdirLock, WorkdirLocked
from slm_jax.train.init import fresh_start, runtime_overrides
from slm_jax.train.program import build_program
from slm_jax.train.metrics import MetricsWriter, kind_losses, progress_line
from slm_jax.vocab import VocabLayout


class NonFiniteError(RuntimeError):
  pass


def config_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def plan_steps(config) -> tuple[int, int]:
  """(step limit or 0, schedule length). The schedule spans the token budget (budget / tokens per step) or
  total_steps, the shorter when both are set."""
  per_step = config.global_batch_size * config.seq_len
  limits = []
  if config.total_steps > 0:
    limits.append(int(config.total_steps))
  if config.token_budget > 0:
    limits.append(int(math.ceil(config.token_budget / per_step)))
  if not limits:
    raise ValueError("set config.total_steps or config.token_budget (label tokens to train on)")
  return (int(config.total_steps) if config.total_steps > 0 else 0), min(limits)


class _SignalFlag:
  """Sets a flag on SIGTERM (one process, main thread only); restored on exit. With several processes the
  jax.distributed preemption service owns SIGTERM and `Checkpointer.reached_preemption` reports it."""

  def __init__(self, enabled: bool):
    self.enabled = enabled
    self.raised = False
    self.previous = None

  def __enter__(self):
    if self.enabled and threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    logging.warning("SIGTERM received: saving a checkpoint after the current step")
    self.raised = True

  def __exit__(self, *exc):
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)


def _agree(flag: bool) -> bool:
  """Process 0's decision on every process (host-local conditions must not split a multi-host run)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _log(msg: str, *args) -> None:
  if jax.process_index() == 0:
    print(msg % args if args else msg, flush=True)


def lock_workdir(workdir: str) -> WorkdirLock:
  """Process 0 takes the workdir lock; every process raises WorkdirLocked when it could not (none waits)."""
  lock = WorkdirLock(workdir, enabled=jax.process_index() == 0)
  error = None
  try:
    lock.acquire()
  except WorkdirLocked as e:
    error = e
  if _agree(error is not None):
    raise error or WorkdirLocked(f"process 0 could not lock {workdir}: see its log")
  return lock


def train(config, workdir: str) -> dict:
  """Runs (or resumes) training; returns a summary {status, step, tokens_seen, first_loss, last_loss, ...}."""
  t_start = time.time()
  validate.validate(config, workdir, device_count=jax.device_count(), process_count=jax.process_count())
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  lock = lock_workdir(workdir)
  try:
    return _run(config, workdir, t_start)
  finally:
    lock.release()


def _run(config, workdir: str, t_start: float) -> dict:
  is_main = jax.process_index() == 0
  param_dtype, dtype, _ = opt_lib.precision_dtypes(config.precision)
  step_limit, schedule_steps = plan_steps(config)

  # ---------------------------------------------------------------- mesh
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  _log("mesh %s on %d devices (%s), %d processes", dict(mesh.shape), mesh.size, jax.devices()[0].device_kind,
       jax.process_count())

  # ---------------------------------------------------------------- model: resume or fresh start
  ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
  ckpt = Checkpointer(ckpt_dir, keep_last=config.keep_last, keep_every=config.keep_every,
                      async_save=config.async_checkpoint)
  latest = ckpt.latest_step()
  if latest is not None:
    meta, _ = orbax_io.read_meta(ckpt_dir, latest)
    cfg = ModelConfig.from_dict(meta["model_config"]).replace(**runtime_overrides(config, param_dtype, dtype))
    layout = VocabLayout.from_dict(meta["vocab_layout"]) if meta.get("vocab_layout") else None
    tok_dir = os.path.join(ckpt_dir, orbax_io.TOKENIZER_DIR)
    tokenizer = orbax_io.load_tokenizer(ckpt_dir) if os.path.isdir(tok_dir) else None
    start, source = None, meta.get("init_source")
    _log("resuming from %s step %d", ckpt_dir, latest)
  else:
    start = fresh_start(config, mesh, param_dtype, dtype)
    cfg, layout, tokenizer, source = start.cfg, start.layout, start.tokenizer, start.source
    _log("fresh start: init %s", source)
  # ---------------------------------------------------------------- shardings, optimizer and update step
  prog = build_program(config, cfg, mesh, schedule_steps)
  param_sh, abstract_params, abstract_opt = prog.param_shardings, prog.abstract_params, prog.abstract_opt
  opt_init, train_fn, eval_fn = prog.opt_init, prog.train_step, prog.eval_step

  # ---------------------------------------------------------------- data
  train_it = data_lib.make_iterator(config, layout, tokenizer, "train", num_epochs=config.data.num_epochs)

  # ---------------------------------------------------------------- state: restore or init
  meta_base = dict(kind="train", init_source=source, config=config_dict(config))
  if latest is not None:
    params, opt_state, ts, _ = ckpt.restore(latest, abstract_params=abstract_params, abstract_opt_state=abstract_opt,
                                            data_iter=data_lib.StateRestorer(train_it))
  else:
    params = jax.device_put(start.params, param_sh)
    opt_state = opt_init(params)
    ts = {"step": 0, "tokens_seen": 0, "tokens_processed": 0, "train_time_s": 0.0,
          "rng": np.asarray(jax.random.key_data(jax.random.key(config.seed))).tolist()}
    if tokenizer is not None and is_main:
      save_tokenizer(tokenizer, os.path.join(ckpt_dir, orbax_io.TOKENIZER_DIR))
    start = None
  step, tokens_seen, tokens_processed = int(ts["step"]), int(ts["tokens_seen"]), int(ts["tokens_processed"])

  # ---------------------------------------------------------------- metrics
  writer = MetricsWriter(workdir, enabled=is_main, tensorboard=config.tensorboard, resume_step=step)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(config_dict(config), f, indent=2)
    writer.write_config(config.to_json_best_effort(indent=2))
  fpt = flops_lib.flops_per_token(cfg, config.seq_len)
  peak, peak_src = flops_lib.device_peak(dtype)
  _log("model %s: %.3gB params (%.3gB non-embedding), %.4g training FLOPs/token at length %d; peak %s: %s",
       cfg.arch, cfg.num_params() / 1e9, cfg.num_params(False) / 1e9, fpt, config.seq_len,
       "unknown" if peak is None else f"{peak / 1e12:.1f} TFLOP/s/device", peak_src)
  _log("steps: limit %s, schedule %d, token budget %s, %d label slots per step",
       step_limit or "-", schedule_steps, config.token_budget or "-", config.global_batch_size * config.seq_len)

  def save(at_step: int) -> None:
    train_state = {"step": at_step, "tokens_seen": tokens_seen, "tokens_processed": tokens_processed,
                   "train_time_s": ts["train_time_s"] + time.time() - t_start, "rng": ts["rng"]}
    meta = orbax_io.make_meta(cfg, layout, param_dtype, step=at_step, tokens_seen=tokens_seen, **meta_base)
    ckpt.save(at_step, params=params, opt_state=opt_state, train_state=train_state, meta=meta,
              data_iter=data_snapshot)
    saved.add(at_step)

  def evaluate() -> dict:
    """Token-mean validation loss over up to eval_batches batches (one pass of the validation split)."""
    it = data_lib.make_iterator(config, layout, tokenizer, "validation", num_epochs=1)
    total = None
    for _ in range(config.eval_batches):
      b = next(it, None)
      if jax.process_count() > 1:  # hosts may hold different numbers of batches: pad with empty ones
        from jax.experimental import multihost_utils
        if not np.asarray(multihost_utils.process_allgather(np.int32(b is not None))).any():
          break
        if b is None:
          b = data_lib.empty_batch(config.global_batch_size // jax.process_count(), config.seq_len)
      elif b is None:
        break
      out = eval_fn(params, data_lib.global_batch(b, mesh))
      total = out if total is None else jax.tree.map(lambda a, c: a + c, total, out)
    if total is None:
      return {}
    total = jax.device_get(total)
    rec = {"val_loss": float(total["nll"]) / max(float(total["count"]), 1.0)}
    rec.update(kind_losses(total["kind_nll"], total["kind_count"], prefix="val_loss_"))
    return rec

  # ---------------------------------------------------------------- loop
  saved: set[int] = {step} if latest is not None else set()
  data_snapshot = data_lib.StateSnapshot(train_it)
  first_loss = last_loss = None
  status = None
  interval_t, interval_tokens, interval_steps, timing_started = None, 0, 0, False
  n_dev = mesh.size
  try:
    batch = next(train_it)
  except StopIteration:
    batch = None
  multi = jax.process_count() > 1
  finite_data = config.data.num_epochs is not None
  with _SignalFlag(enabled=not multi) as sig:
    while True:
      # ---- run control (before dispatching the next step); every process takes the same decision
      wall = config.max_wall_s > 0 and (not multi or step % config.log_every == 0)
      if step_limit and step >= step_limit:
        status = "total_steps"
      elif config.token_budget > 0 and tokens_seen >= config.token_budget:
        status = "token_budget"  # tokens_seen is the global count: the same everywhere
      elif wall and _agree(time.time() - t_start >= config.max_wall_s):
        status = "wall_clock"
      elif sig.raised or (multi and ckpt.reached_preemption(step)):
        status = "preempted"
      elif (_agree(batch is None) if multi and finite_data else batch is None):
        status = "data_exhausted"
      if status:
        break
      # ---- one step; the next batch is fetched while the device computes
      params, opt_state, metrics = train_fn(params, opt_state, data_lib.global_batch(batch, mesh), step)
      data_snapshot = data_lib.StateSnapshot(train_it)
      try:
        batch = next(train_it)
      except StopIteration:
        batch = None
      m = jax.device_get(metrics)
      if not m["finite"]:
        ckpt.wait()
        good = ckpt.latest_step()
        writer.close()
        ckpt.close()
        raise NonFiniteError(
            f"non-finite loss or gradient at step {step + 1} (loss {float(m['loss'])}, grad norm "
            f"{float(m['grad_norm'])}); stopped without saving. The last good checkpoint is "
            f"{'step ' + str(good) if good is not None else 'none'} in {ckpt_dir}. Lower optim.lr or "
            "check the data, then rerun the same command to resume from it.")
      step += 1
      tokens_seen += int(round(float(m["count"])))
      tokens_processed += config.global_batch_size * config.seq_len
      last_loss = float(m["loss"])
      first_loss = last_loss if first_loss is None else first_loss
      now = time.time()
      if not timing_started:  # the first step of an invocation includes compilation: not timed
        interval_t, interval_tokens, interval_steps, timing_started = now, 0, 0, True
      else:
        interval_tokens += config.global_batch_size * config.seq_len
        interval_steps += 1
      # ---- logging
      val = evaluate() if config.eval_every > 0 and step % config.eval_every == 0 else {}
      if step % config.log_every == 0 or val or step == 1:
        dt = now - interval_t
        tps = interval_tokens / dt if interval_steps and dt > 0 else float("nan")
        tflops = tps * fpt / n_dev / 1e12
        remaining = [(step_limit - step) * dt / interval_steps] if step_limit and interval_steps else []
        if config.token_budget > 0 and interval_tokens and tokens_seen:
          remaining.append((config.token_budget - tokens_seen) / (tokens_seen / max(tokens_processed, 1)) / tps)
        rec = {"step": step, "loss": last_loss, **kind_losses(m["kind_nll"], m["kind_count"]),
               "grad_norm": float(m["grad_norm"]), "lr": float(m["lr"]), "tokens_seen": tokens_seen,
               "tokens_processed": tokens_processed, "tokens_per_s": tps, "tflops_per_device": tflops,
               "mfu": (tps * fpt / n_dev / peak) if peak and math.isfinite(tps) else None,
               "eta_s": min(remaining) if remaining else float("nan"),
               "elapsed_s": now - t_start, **val}
        writer.write(rec, print_line=progress_line(rec) + (f" | val {val['val_loss']:.4f}" if val else ""))
        interval_t, interval_tokens, interval_steps = time.time(), 0, 0
      # ---- periodic checkpoint
      if config.checkpoint_every > 0 and step % config.checkpoint_every == 0:
        save(step)
    if step not in saved:
      save(step)
  ckpt.close()
  writer.close()
  summary = {"status": status, "step": step, "tokens_seen": tokens_seen, "first_loss": first_loss,
             "last_loss": last_loss, "checkpoint_dir": ckpt_dir, "latest_checkpoint": step, "workdir": workdir,
             "elapsed_s": time.time() - t_start}
  _log("stopped (%s) at step %d, %d label tokens seen; checkpoint %s step %d", status, step, tokens_seen,
       ckpt_dir, step)
  return summary
