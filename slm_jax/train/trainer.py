"""The training run: `train` = validate, lock, set up, restore or start, loop, close; each part is a function.

Rerunning the same command resumes from the newest checkpoint in `<workdir>/checkpoints` that restores (a damaged
one is reported and set aside, the next older one is used) with the params, optimizer state, step, label-token
count and data-iterator state of every process, so the losses continue exactly as if the run had not stopped.
The run stops at the first of: `total_steps`, the token budget (label tokens trained on), the wall-clock limit,
SIGTERM or a cluster preemption notice ('preempted'), Ctrl-C ('interrupted'; all three save a checkpoint), exhausted data, or a non-finite
loss or gradient (which saves nothing and raises `NonFiniteError`, leaving the last good checkpoint as the
latest). Whatever happens, the checkpointer (a save in flight completes), the metrics writer and the workdir
lock are closed in `finally`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from typing import Any, Callable

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
from slm_jax.train.checkpointing import CHECKPOINT_DIR, Checkpointer, NoRestorableCheckpoint  # noqa: F401
from slm_jax.train.init import fresh_start, runtime_overrides
from slm_jax.train.lock import WorkdirLock, WorkdirLocked
from slm_jax.train.metrics import MetricsWriter, kind_losses, progress_line
from slm_jax.train.program import Program, build_program
from slm_jax.vocab import VocabLayout

SHARDINGS_FILE = "shardings.txt"


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


# ---------------------------------------------------------------- process agreement and logging

def _agree(flag: bool) -> bool:
  """Process 0's decision on every process (host-local conditions must not split a multi-host run)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _all(flag: bool) -> bool:
  """True on every process when `flag` holds on every process."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).all())


def _log(msg: str, *args) -> None:
  if jax.process_index() == 0:
    print(msg % args if args else msg, flush=True)


# ---------------------------------------------------------------- signals and stop reasons

class SignalFlag:
  """Records SIGTERM and SIGINT (Ctrl-C) so the loop stops and saves after the current step; a second Ctrl-C
  interrupts at once (the `finally` still closes everything). One process, main thread only: with several
  processes the jax.distributed preemption service owns SIGTERM and `Checkpointer.reached_preemption` reports it.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self, enabled: bool):
    self.enabled = enabled
    self.raised: str | None = None
    self.previous: dict = {}

  def __enter__(self):
    if self.enabled and threading.current_thread() is threading.main_thread():
      self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.raised and signum == signal.SIGINT:
      raise KeyboardInterrupt
    logging.warning("%s received: saving a checkpoint after the current step", name)
    _log("%s received: stopping after the current step with a checkpoint (Ctrl-C again to stop at once)", name)
    self.raised = name

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      signal.signal(s, handler)
    self.previous = {}


class Stopper:
  """Why the run stops before the next step (or None); every process takes the same decision."""

  def __init__(self, config, step_limit: int, t_start: float, signals: SignalFlag, ckpt=None,
               clock: Callable[[], float] = time.time):
    self.config, self.step_limit, self.t_start, self.signals, self.ckpt = config, step_limit, t_start, signals, ckpt
    self.clock = clock
    self.multi = jax.process_count() > 1
    self.finite_data = config.data.num_epochs is not None

  def __call__(self, step: int, tokens_seen: int, out_of_data: bool) -> str | None:
    c = self.config
    wall = c.max_wall_s > 0 and (not self.multi or step % c.log_every == 0)
    if self.step_limit and step >= self.step_limit:
      return "total_steps"
    if c.token_budget > 0 and tokens_seen >= c.token_budget:
      return "token_budget"  # tokens_seen is the global count: the same everywhere
    if wall and _agree(self.clock() - self.t_start >= c.max_wall_s):
      return "wall_clock"
    if self.signals.raised == "SIGINT":
      return "interrupted"
    if self.signals.raised or (self.multi and self.ckpt is not None and self.ckpt.reached_preemption(step)):
      return "preempted"
    if _agree(out_of_data) if self.multi and self.finite_data else out_of_data:
      return "data_exhausted"
    return None


# ---------------------------------------------------------------- timing and ETA

class Chrono:
  """Throughput, MFU and ETA over the steps since the last report. The first step of an invocation (it includes
  compilation) is not timed; time spent between a report and `restart` (logging, evaluation) is not counted."""

  def __init__(self, tokens_per_step: int, step_limit: int, token_budget: float, flops_per_token: float,
               n_devices: int, peak: float | None, clock: Callable[[], float] = time.time):
    self.tokens_per_step, self.step_limit, self.token_budget = tokens_per_step, step_limit, token_budget
    self.fpt, self.n_devices, self.peak, self.clock = flops_per_token, n_devices, peak, clock
    self.started = False
    self.t, self.tokens, self.steps = clock(), 0, 0

  def tick(self) -> None:
    """After each step."""
    if not self.started:
      self.started = True
      self.restart()
    else:
      self.tokens += self.tokens_per_step
      self.steps += 1

  def restart(self) -> None:
    self.t, self.tokens, self.steps = self.clock(), 0, 0

  def report(self, step: int, tokens_seen: int, tokens_processed: int) -> dict:
    dt = self.clock() - self.t
    tps = self.tokens / dt if self.steps and dt > 0 else float("nan")
    remaining = [(self.step_limit - step) * dt / self.steps] if self.step_limit and self.steps else []
    if self.token_budget > 0 and self.tokens and tokens_seen:
      label_fraction = tokens_seen / max(tokens_processed, 1)
      remaining.append((self.token_budget - tokens_seen) / label_fraction / tps)
    tflops = tps * self.fpt / self.n_devices / 1e12
    return {"tokens_per_s": tps, "tflops_per_device": tflops,
            "mfu": (tps * self.fpt / self.n_devices / self.peak) if self.peak and math.isfinite(tps) else None,
            "eta_s": min(remaining) if remaining else float("nan")}


# ---------------------------------------------------------------- setup, restore or start

@dataclasses.dataclass
class Setup:
  config: Any
  workdir: str
  mesh: Any
  ckpt: Checkpointer
  step_limit: int
  schedule_steps: int
  param_dtype: str
  dtype: str

  @property
  def ckpt_dir(self) -> str:
    return self.ckpt.directory


@dataclasses.dataclass
class State:
  """What a checkpoint holds besides the data iterator; train_time_s is the total before this invocation."""
  params: Any
  opt_state: Any
  step: int = 0
  tokens_seen: int = 0
  tokens_processed: int = 0
  train_time_s: float = 0.0
  rng: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Start:
  """The model side of a run: structure, vocabulary, tokenizer, where it came from, and its compiled program."""
  cfg: ModelConfig
  layout: VocabLayout | None
  tokenizer: Any
  source: dict
  prog: Program
  resumed_from: int | None = None


def setup(config, workdir: str) -> Setup:
  """Mesh and checkpointer."""
  param_dtype, dtype, _ = opt_lib.precision_dtypes(config.precision)
  step_limit, schedule_steps = plan_steps(config)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  _log("mesh %s on %d devices (%s), %d processes", dict(mesh.shape), mesh.size, jax.devices()[0].device_kind,
       jax.process_count())
  ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), keep_last=config.keep_last,
                      keep_every=config.keep_every, async_save=config.async_checkpoint)
  return Setup(config, workdir, mesh, ckpt, step_limit, schedule_steps, param_dtype, dtype)


def resume(s: Setup) -> tuple[Start, State, Any]:
  """(start, state, train iterator) from the newest step that restores; raises NoRestorableCheckpoint."""
  tok_dir = os.path.join(s.ckpt_dir, orbax_io.TOKENIZER_DIR)
  tokenizer = orbax_io.load_tokenizer(s.ckpt_dir) if os.path.isdir(tok_dir) else None

  def attempt(step: int):
    meta, _ = orbax_io.read_meta(s.ckpt_dir, step)
    cfg = ModelConfig.from_dict(meta["model_config"]).replace(**runtime_overrides(s.config, s.param_dtype, s.dtype))
    layout = VocabLayout.from_dict(meta["vocab_layout"]) if meta.get("vocab_layout") else None
    prog = build_program(s.config, cfg, s.mesh, s.schedule_steps)
    it = prog.objective.make_iterator(s.config, layout, tokenizer, "train", num_epochs=s.config.data.num_epochs,
                                      source=meta.get("init_source"))
    params, opt_state, ts, _ = s.ckpt.restore(step, abstract_params=prog.abstract_params,
                                              abstract_opt_state=prog.abstract_opt,
                                              data_iter=data_lib.StateRestorer(it))
    state = State(params, opt_state, int(ts["step"]), int(ts["tokens_seen"]), int(ts["tokens_processed"]),
                  float(ts["train_time_s"]), ts["rng"])
    return Start(cfg, layout, tokenizer, meta.get("init_source"), prog, step), state, it

  _check_layout(s)
  step, out = s.ckpt.restore_newest(attempt, agree=_all)
  _log("resuming from %s step %d", s.ckpt_dir, step)
  return out


def _check_layout(s: Setup) -> None:
  """A run resumes with the layer layout it saved (stacked for scan_layers=True): its optimizer state has that
  layout too. The newest step whose metadata reads decides; a mismatch is the config's error, not damage."""
  for step in sorted(s.ckpt.all_steps(), reverse=True):
    try:
      meta, _ = orbax_io.read_meta(s.ckpt_dir, step)
    except (OSError, ValueError, KeyError):
      continue
    cfg = ModelConfig.from_dict(meta["model_config"]).replace(**runtime_overrides(s.config, s.param_dtype, s.dtype))
    orbax_io.check_layers_layout(meta, cfg, where=f"{s.ckpt_dir} step {step}")
    return


def start_fresh(s: Setup) -> tuple[Start, State, Any]:
  """(start, state at step 0, train iterator) from config.init; the tokenizer is saved next to the checkpoints."""
  init = fresh_start(s.config, s.mesh, s.param_dtype, s.dtype)
  _log("fresh start: init %s", init.source)
  prog = build_program(s.config, init.cfg, s.mesh, s.schedule_steps)
  params = jax.device_put(init.params, prog.param_shardings)
  source = prog.objective.start_source(init.source, params)  # recorded with every checkpoint
  state = State(params, prog.opt_init(params),
                rng=np.asarray(jax.random.key_data(jax.random.key(s.config.seed))).tolist())
  if init.tokenizer is not None and jax.process_index() == 0:
    save_tokenizer(init.tokenizer, os.path.join(s.ckpt_dir, orbax_io.TOKENIZER_DIR))
  it = prog.objective.make_iterator(s.config, init.layout, init.tokenizer, "train",
                                    num_epochs=s.config.data.num_epochs, source=source)
  return Start(init.cfg, init.layout, init.tokenizer, source, prog), state, it


def write_shardings(workdir: str, prog: Program) -> str:
  """`sharding.describe` of the parameters into <workdir>/shardings.txt (process 0); a large replicated
  parameter is reported there and in the log, not raised."""
  path = os.path.join(workdir, SHARDINGS_FILE)
  if jax.process_index() != 0:
    return path
  lines = [f"mesh {dict(prog.mesh.shape)}"]
  try:
    sharding.describe(prog.abstract_params, print_fn=lines.append)
  except ValueError as e:
    lines.append(f"WARNING: {e}")
    logging.warning("%s (see %s)", e, path)
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


# ---------------------------------------------------------------- evaluation and checkpoints

def evaluate(config, start: Start, params) -> dict:
  """Token-mean validation loss over up to eval_batches batches (one pass of the validation split)."""
  mesh = start.prog.mesh
  objective = start.prog.objective
  it = objective.make_iterator(config, start.layout, start.tokenizer, "validation", num_epochs=1,
                               source=start.source)
  total = None
  for _ in range(config.eval_batches):
    b = next(it, None)
    if jax.process_count() > 1:  # hosts may hold different numbers of batches: pad with empty ones
      if not _any_process(b is not None):
        break
      if b is None:
        b = objective.empty_host_batch(config, jax.process_count())
    elif b is None:
      break
    out = start.prog.eval_step(params, data_lib.global_batch(b, mesh, objective.extra_keys))
    total = out if total is None else jax.tree.map(lambda a, c: a + c, total, out)
  if total is None:
    return {}
  total = jax.device_get(total)
  rec = {"val_loss": float(total["nll"]) / max(float(total["count"]), 1.0)}
  rec.update(kind_losses(total["kind_nll"], total["kind_count"], prefix="val_loss_"))
  rec.update({f"val_{k}": float(total[k]) / max(float(total["count"]), 1.0) for k in objective.metric_names})
  return rec


def _any_process(flag: bool) -> bool:
  from jax.experimental import multihost_utils
  return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).any())


def save(s: Setup, start: Start, state: State, data_snapshot, t_start: float) -> None:
  train_state = {"step": state.step, "tokens_seen": state.tokens_seen, "tokens_processed": state.tokens_processed,
                 "train_time_s": state.train_time_s + time.time() - t_start, "rng": state.rng}
  meta = orbax_io.make_meta(start.prog.cfg, start.layout, s.param_dtype, step=state.step,
                            tokens_seen=state.tokens_seen, kind="train", init_source=start.source,
                            config=config_dict(s.config))
  s.ckpt.save(state.step, params=state.params, opt_state=state.opt_state, train_state=train_state, meta=meta,
              data_iter=data_snapshot)


# ---------------------------------------------------------------- the loop

def _scalars(m: dict) -> dict:
  """The step's metrics for the log: per-kind losses and every scalar the program reports."""
  rec = kind_losses(m["kind_nll"], m["kind_count"]) if "kind_nll" in m else {}
  for k, v in m.items():
    if k not in ("finite", "count", "kind_nll", "kind_count") and np.ndim(v) == 0:
      rec[k] = float(v)
  return rec


def run_loop(s: Setup, start: Start, state: State, train_it, writer: MetricsWriter, stop: Stopper,
             chrono: Chrono, t_start: float) -> tuple[str, float | None, float | None]:
  """Steps until a stop reason; logs, evaluates and checkpoints on schedule. (status, first loss, last loss)."""
  config, prog = s.config, start.prog
  per_step = config.global_batch_size * config.seq_len
  saved = {state.step} if start.resumed_from is not None else set()
  data_snapshot = data_lib.StateSnapshot(train_it)
  first_loss = last_loss = None
  batch = next(train_it, None)
  while True:
    status = stop(state.step, state.tokens_seen, batch is None)
    if status:
      break
    # one step; the next batch is fetched while the device computes
    host = data_lib.global_batch(batch, s.mesh, prog.objective.extra_keys)
    state.params, state.opt_state, metrics = prog.train_step(state.params, state.opt_state, host, state.step)
    data_snapshot = data_lib.StateSnapshot(train_it)
    batch = next(train_it, None)
    m = jax.device_get(metrics)
    if not m["finite"]:
      s.ckpt.wait()
      good = s.ckpt.latest_step()
      raise NonFiniteError(
          f"non-finite loss or gradient at step {state.step + 1} (loss {float(m['loss'])}, grad norm "
          f"{float(m.get('grad_norm', float('nan')))}); stopped without saving. The last good checkpoint is "
          f"{'step ' + str(good) if good is not None else 'none'} in {s.ckpt_dir}. Lower optim.lr or "
          "check the data, then rerun the same command to resume from it.")
    state.step += 1
    state.tokens_seen += int(round(float(m["count"])))
    state.tokens_processed += per_step
    last_loss = float(m["loss"])
    first_loss = last_loss if first_loss is None else first_loss
    chrono.tick()
    due = config.eval_every > 0 and state.step % config.eval_every == 0
    val = evaluate(config, start, state.params) if due else {}
    if state.step % config.log_every == 0 or val or state.step == 1:
      rec = {"step": state.step, **_scalars(m), "tokens_seen": state.tokens_seen,
             "tokens_processed": state.tokens_processed, **chrono.report(state.step, state.tokens_seen,
                                                                         state.tokens_processed),
             "elapsed_s": time.time() - t_start, **val}
      writer.write(rec, print_line=progress_line(rec) + (f" | val {val['val_loss']:.4f}" if val else ""))
      chrono.restart()
    if config.checkpoint_every > 0 and state.step % config.checkpoint_every == 0:
      save(s, start, state, data_snapshot, t_start)
      saved.add(state.step)
  if state.step not in saved:
    save(s, start, state, data_snapshot, t_start)
  return status, first_loss, last_loss


# ---------------------------------------------------------------- the run

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


def _close(*closers) -> None:
  """Calls each closer; a failure is logged so the others still run (the original exception is kept)."""
  for close in closers:
    try:
      close()
    except Exception as e:  # noqa: BLE001
      logging.error("while shutting down: %s: %s", type(e).__name__, e)


def train(config, workdir: str) -> dict:
  """Runs (or resumes) training; returns a summary {status, step, tokens_seen, first_loss, last_loss, ...}."""
  t_start = time.time()
  validate.validate(config, workdir, device_count=jax.device_count(), process_count=jax.process_count())
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  lock = lock_workdir(workdir)
  s = writer = None
  try:
    s = setup(config, workdir)
    start, state, train_it = resume(s) if s.ckpt.all_steps() else start_fresh(s)
    start.prog.objective.prepare(config, start.prog, start.layout, state.params, fresh=start.resumed_from is None,
                                 param_dtype=s.param_dtype, dtype=s.dtype, source=start.source)
    writer = MetricsWriter(workdir, enabled=jax.process_index() == 0, tensorboard=config.tensorboard,
                           resume_step=state.step)
    _write_run_info(s, start, writer)
    fpt = start.prog.objective.flops_per_slot(config, start.cfg)  # DPO: + the reference forward
    peak, _ = flops_lib.device_peak(s.dtype)
    chrono = Chrono(config.global_batch_size * config.seq_len, s.step_limit, config.token_budget, fpt,
                    s.mesh.size, peak)
    with SignalFlag(enabled=jax.process_count() == 1) as signals:
      stop = Stopper(config, s.step_limit, t_start, signals, s.ckpt)
      status, first_loss, last_loss = run_loop(s, start, state, train_it, writer, stop, chrono, t_start)
  finally:
    _close(*([s.ckpt.close] if s is not None else []), *([writer.close] if writer is not None else []),
           lock.release)
  _log("stopped (%s) at step %d, %d label tokens seen; checkpoint %s step %d", status, state.step,
       state.tokens_seen, s.ckpt_dir, state.step)
  return {"status": status, "step": state.step, "tokens_seen": state.tokens_seen, "first_loss": first_loss,
          "last_loss": last_loss, "checkpoint_dir": s.ckpt_dir, "latest_checkpoint": state.step,
          "workdir": workdir, "elapsed_s": time.time() - t_start}


def _write_run_info(s: Setup, start: Start, writer: MetricsWriter) -> None:
  """config.json, shardings.txt and the model / schedule summary (process 0)."""
  config = s.config
  if jax.process_index() == 0:
    with open(os.path.join(s.workdir, "config.json"), "w") as f:
      json.dump(config_dict(config), f, indent=2)
    writer.write_config(config.to_json_best_effort(indent=2))
  write_shardings(s.workdir, start.prog)
  cfg = start.cfg
  fpt = start.prog.objective.flops_per_slot(config, cfg)
  peak, peak_src = flops_lib.device_peak(s.dtype)
  ref = f" (objective {start.prog.objective.name})" if fpt != flops_lib.flops_per_token(cfg, config.seq_len) else ""
  _log("model %s: %.3gB params (%.3gB non-embedding), %.4g training FLOPs/token%s at length %d; peak %s: %s",
       cfg.arch, cfg.num_params() / 1e9, cfg.num_params(False) / 1e9, fpt, ref, config.seq_len,
       "unknown" if peak is None else f"{peak / 1e12:.1f} TFLOP/s/device", peak_src)
  _log("steps: limit %s, schedule %d, token budget %s, %d label slots per step",
       s.step_limit or "-", s.schedule_steps, config.token_budget or "-", config.global_batch_size * config.seq_len)
