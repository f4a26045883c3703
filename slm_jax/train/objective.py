"""What a training objective owns, behind one interface: the trainer, program, AOT compile, validation and FLOPs
accounting call an `Objective` and never branch on its name.

An objective gives: its batch (shape, extra keys such as DPO's `ref_logps`, their abstract values and shardings),
the per-micro-batch loss sums of `step.make_step`, its run-time parts (a frozen reference), the set-up before the
first step, the FLOPs one step computes per row slot, its config rules and its metric names. A new objective
subclasses `Objective` and is registered in `train/objectives.py` under its config name (`config.objective`).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from slm_jax.data.packing import BATCH_KEYS, empty_batch
from slm_jax.model.config import ModelConfig
from slm_jax.train import data as data_lib
from slm_jax.train import flops as flops_lib
from slm_jax.train import step as step_lib


def row_slots(batch: dict) -> int:
  """Label slots of a batch (rows x length): a static normaliser that keeps summed gradients in range."""
  return batch["input_ids"].shape[0] * batch["input_ids"].shape[1]


class Objective:
  """Language-model-shaped defaults; subclasses override what differs (see `lm.LanguageModelling`, `dpo.DPO`)."""

  name = ""
  data_kinds: tuple[str, ...] = ()        # config.data.kind values it trains on
  data_about = ""                         # those in words, for the config check's message
  extra_keys: tuple[str, ...] = ()        # batch keys beside step.BATCH_KEYS, `values_per_row` values per row
  extra_dtype = "float32"                 # their dtype
  metric_names: tuple[str, ...] = ()      # metrics it logs besides loss / count / kind losses (val_ too)

  # ------------------------------------------------------------------ config rules
  def config_problems(self, config, process_count: int = 1) -> list[str]:
    """Problems of its own config keys that need no files (empty when valid)."""
    return []

  def path_problems(self, config, resuming: bool) -> list[str]:
    """Problems with the files it reads (empty when valid)."""
    return []

  # ------------------------------------------------------------------ the batch
  def batch_shape(self, config) -> tuple[int, int]:
    """(rows, row length) of one global batch."""
    return config.global_batch_size, config.seq_len

  def batch_shardings(self, mesh: Mesh) -> dict:
    """NamedSharding of every key of the step's batch: rows over the batch axes (extra keys: one value per row)."""
    bs = step_lib.batch_sharding(mesh)
    rows = NamedSharding(mesh, P(*bs.spec[:1]))
    return {**{k: bs for k in BATCH_KEYS}, **{k: rows for k in self.extra_keys}}

  def abstract_batch(self, config, mesh: Mesh, *, with_extras: bool = True) -> dict:
    """ShapeDtypeStructs of one global batch of the step on `mesh` (with_extras=False: the model inputs only)."""
    shape = self.batch_shape(config)
    sh = self.batch_shardings(mesh)
    out = {k: jax.ShapeDtypeStruct(shape, v.dtype, sharding=sh[k]) for k, v in empty_batch(1, shape[1]).items()}
    if with_extras:
      out.update({k: jax.ShapeDtypeStruct((shape[0] * self.values_per_row(config),), self.extra_dtype,
                                          sharding=sh[k]) for k in self.extra_keys})
    return out

  def values_per_row(self, config) -> int:
    """Values of each extra key per batch row."""
    return 1

  def empty_host_batch(self, config, process_count: int) -> dict:
    """A host's share of a batch with no labels (multi-host validation pads with it)."""
    rows, length = self.batch_shape(config)
    return empty_batch(rows // process_count, length)

  def make_iterator(self, config, layout, tokenizer, split: str, *, num_epochs=None, source: dict | None = None):
    """Host-local batch iterator of `split` ('train' or 'validation')."""
    return data_lib.make_iterator(config, layout, tokenizer, split, num_epochs=num_epochs)

  # ------------------------------------------------------------------ the step
  def loss_sums(self, config, graphdef, training: bool) -> Callable:
    """(params, micro-batch) -> (total, weight, aux) for `step.make_step` (training) or `step.make_eval`."""
    raise NotImplementedError

  def step_options(self, config) -> dict:
    """`step.make_step` keyword arguments besides the loss sums (normaliser, split, metrics)."""
    return dict(normaliser=row_slots)

  def build_steps(self, config, graphdef, tx, lr_fn: Callable, mesh: Mesh, param_shardings,
                  opt_shardings) -> tuple[Callable, Callable, Any]:
    """(train_step, eval_step, run-time parts or None), jitted on `mesh`: what `program.build_program` holds."""
    found = self.config_problems(config)
    if found:
      raise ValueError(f"invalid config for objective {self.name!r}: " + "; ".join(found))
    keys = BATCH_KEYS + self.extra_keys
    step = step_lib.make_step(self.loss_sums(config, graphdef, training=True), tx, lr_fn, keys=keys, micro_batches=config.micro_batches,
                              nan_at_step=config.inject_nan_at_step, param_shardings=param_shardings,
                              **self.step_options(config))
    sh = self.batch_shardings(mesh)
    train = step_lib.jit_train_step(step, mesh, param_shardings, opt_shardings, sh)
    ev = step_lib.jit_eval_step(step_lib.make_eval(self.loss_sums(config, graphdef, training=False)), mesh, param_shardings, sh)
    return train, ev, None

  # ------------------------------------------------------------------ around the run
  def start_source(self, source: dict, params) -> dict:
    """The init-source record kept with every checkpoint (DPO adds the starting weights' fingerprint)."""
    return source

  def prepare(self, config, prog, layout, params, *, fresh: bool, param_dtype: str, dtype: str,
              source: dict | None) -> None:
    """Before the first step of this invocation (DPO: the frozen reference or its stored log-probs)."""

  def flops_per_slot(self, config, cfg: ModelConfig) -> float:
    """FLOPs one step computes per row slot of seq_len (the work MFU counts): one training step by default."""
    return flops_lib.flops_per_token(cfg, config.seq_len)

  def memory_report(self, config, prog, mesh: Mesh, step_bytes: int, gb: float = 1e9) -> tuple[dict, int]:
    """(extra fields of the AOT report, sizes in units of `gb` bytes; per-device bytes of the whole run) given the
    train step's bytes."""
    return {}, step_bytes
