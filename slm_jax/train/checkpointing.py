"""Training checkpoints: an Orbax CheckpointManager over orbax_io's item layout, async, with exact resume.

A step folder holds `params` (nnx pure dict, what `orbax_io.load_model` reads), `meta` (orbax_io.make_meta
plus the resolved training config), `opt_state`, `train_state` (step, label tokens seen, RNG, elapsed time)
and `data` (the iterator state of every process, grain's one-file-per-process handler). Orbax writes each
step into a temporary folder and renames it when complete, so a run killed mid-save resumes from the
previous complete step. `restore_newest` goes past a damaged step to the next older one and sets the damaged
ones aside (`<directory>.damaged/`), never deleting any.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Callable

import grain
import jax
import orbax.checkpoint as ocp

from slm_jax.checkpoint.orbax_io import DATA, META, OPT_STATE, PARAMS, TRAIN_STATE

CHECKPOINT_DIR = "checkpoints"  # a run's checkpoints: <workdir>/checkpoints/<step>/


def _options(keep_last: int, keep_every: int, async_save: bool) -> ocp.CheckpointManagerOptions:
  from orbax.checkpoint import checkpoint_managers as cm
  policies = [cm.LatestN(keep_last)]
  if keep_every:
    policies.append(cm.EveryNSteps(keep_every))
  return ocp.CheckpointManagerOptions(preservation_policy=cm.AnyPreservationPolicy(policies),
                                      enable_async_checkpointing=async_save, cleanup_tmp_directories=True)


def abstract_like(tree, shardings):
  """ShapeDtypeStructs carrying the target NamedShardings (restore onto any mesh)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class NoRestorableCheckpoint(RuntimeError):
  """No step of a run's checkpoint folder could be restored; `failures` is [(step, reason), ...]."""

  def __init__(self, directory: str, failures: list[tuple[int, str]]):
    self.failures = failures
    super().__init__(f"no checkpoint step in {directory} can be restored (nothing was deleted):\n" + "\n".join(
        f"  step {s}: {r}" for s, r in failures))


def _reason(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text[:400]}"


class Checkpointer:
  """Saves and restores (params, opt_state, train_state, data iterator, meta) under `directory`."""

  def __init__(self, directory: str, *, keep_last: int = 3, keep_every: int = 0, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.mngr = ocp.CheckpointManager(self.directory, options=_options(keep_last, keep_every, async_save))

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.mngr.all_steps())

  def save(self, step: int, *, params, opt_state, train_state: dict, meta: dict, data_iter=None) -> None:
    items = {PARAMS: ocp.args.StandardSave(params), OPT_STATE: ocp.args.StandardSave(opt_state),
             TRAIN_STATE: ocp.args.JsonSave(train_state), META: ocp.args.JsonSave(meta)}
    if data_iter is not None:
      items[DATA] = grain.checkpoint.CheckpointSave(data_iter)
    self.mngr.save(step, args=ocp.args.Composite(**items), force=True)
    logging.info("checkpoint: saving step %d to %s (async)", step, self.directory)

  def restore(self, step: int, *, abstract_params, abstract_opt_state, data_iter=None):
    """(params, opt_state, train_state, meta); the data iterator is restored in place."""
    items = {PARAMS: ocp.args.StandardRestore(abstract_params),
             OPT_STATE: ocp.args.StandardRestore(abstract_opt_state),
             TRAIN_STATE: ocp.args.JsonRestore(), META: ocp.args.JsonRestore()}
    if data_iter is not None:
      items[DATA] = grain.checkpoint.CheckpointRestore(data_iter)
    out = self.mngr.restore(step, args=ocp.args.Composite(**items))
    return out[PARAMS], out[OPT_STATE], out[TRAIN_STATE], out[META]

  def restore_newest(self, attempt: Callable[[int], object], agree: Callable[[bool], bool] = bool,
                     set_aside: bool = True):
    """(step, attempt(step)) for the newest step that restores, trying older ones after a failure.

    `agree(ok)` is True only when every process restored the step (multi-host). The steps newer than the one
    restored are moved to `<directory>.damaged/` (so the run can save those step numbers again) when
    `set_aside`; none is deleted. Raises NoRestorableCheckpoint with each step's reason when none restores.
    """
    failures = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        out, error = attempt(step), None
      except Exception as e:  # a damaged or incomplete step: any reader error
        out, error = None, e
      if not agree(error is None):
        reason = _reason(error) if error is not None else "another process could not restore it"
        logging.warning("checkpoint step %d in %s cannot be restored (%s); trying the next older step", step,
                        self.directory, reason)
        failures.append((step, reason))
        continue
      if failures and set_aside:
        self._set_aside([s for s, _ in failures])
      return step, out
    raise NoRestorableCheckpoint(self.directory, failures)

  def _set_aside(self, steps: list[int]) -> None:
    """Moves damaged step folders out of the manager's sight (process 0), keeping them for inspection."""
    if jax.process_index() == 0:
      dest_root = self.directory + ".damaged"
      os.makedirs(dest_root, exist_ok=True)
      for step in steps:
        dest = os.path.join(dest_root, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(os.path.join(self.directory, str(step)), dest)
        logging.warning("checkpoint step %d moved to %s (it could not be restored)", step, dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("checkpoint_set_aside")
    self.mngr.reload()

  def reached_preemption(self, step: int) -> bool:
    """True on every process once the cluster's preemption notice reached this step (multi-host)."""
    try:
      return bool(self.mngr.reached_preemption(step))
    except Exception:  # no preemption service (single process, no jax.distributed)
      return False

  def wait(self) -> None:
    self.mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for a save in flight (it completes whole; one killed mid-way is discarded on the next start)."""
    try:
      self.mngr.wait_until_finished()
    finally:
      self.mngr.close()
