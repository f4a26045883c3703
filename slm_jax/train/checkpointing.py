"""Training checkpoints: an Orbax CheckpointManager over orbax_io's item layout, async, with exact resume.

A step folder holds `params` (nnx pure dict, what `orbax_io.load_model` reads), `meta` (orbax_io.make_meta
plus the resolved training config), `opt_state`, `train_state` (step, label tokens seen, RNG, elapsed time)
and `data` (the iterator state of every process, grain's one-file-per-process handler). Orbax writes each
step into a temporary folder and renames it when complete, so a run killed mid-save resumes from the
previous complete step.
"""
from __future__ import annotations

import logging
import os

import grain
import jax
import orbax.checkpoint as ocp

from slm_jax.checkpoint.orbax_io import DATA, META, OPT_STATE, PARAMS, TRAIN_STATE

CHECKPOINT_DIR = "checkpoints"  # a run's checkpoints: <workdir>/checkpoints/<step>/


def _options(keep_last: int, keep_every: int, async_save: bool) -> ocp.CheckpointManagerOptions:
  kw = dict(enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
  try:
    from orbax.checkpoint import checkpoint_managers as cm
    policies = [cm.LatestN(keep_last)]
    if keep_every:
      policies.append(cm.EveryNSteps(keep_every))
    return ocp.CheckpointManagerOptions(preservation_policy=cm.AnyPreservationPolicy(policies), **kw)
  except (ImportError, AttributeError, TypeError):  # older Orbax
    return ocp.CheckpointManagerOptions(max_to_keep=keep_last, keep_period=keep_every or None, **kw)


def abstract_like(tree, shardings):
  """ShapeDtypeStructs carrying the target NamedShardings (restore onto any mesh)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


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

  def reached_preemption(self, step: int) -> bool:
    """True on every process once the cluster's preemption notice reached this step (multi-host)."""
    try:
      return bool(self.mngr.reached_preemption(step))
    except Exception:  # no preemption service (single process, no jax.distributed)
      return False

  def wait(self) -> None:
    self.mngr.wait_until_finished()

  def close(self) -> None:
    self.mngr.wait_until_finished()
    self.mngr.close()
