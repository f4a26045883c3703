"""The trainer's side of the input pipeline: build iterators from the config, make global batches, and
checkpoint exactly the iterator state of the batches already trained on.
"""
from __future__ import annotations

import json

import jax
import numpy as np
from jax.sharding import Mesh

from slm_jax.train.step import BATCH_KEYS, batch_sharding
from slm_jax.train.synthetic import SyntheticIterator
from slm_jax.vocab import VocabLayout

DATA_KINDS = ("pipeline", "synthetic", "preference")  # preference: pairs, read by objective 'dpo'


def make_iterator(config, layout: VocabLayout, tokenizer, split: str, *, num_epochs=None):
  """Host-local batch iterator for `split` ('train' or 'validation') of this process: packed rows of the prepared
  sources (data.kind 'pipeline') or synthetic ones. Objectives with data of their own (DPO's preference pairs) make
  their iterators themselves (`objective.Objective.make_iterator`)."""
  d = config.data
  if d.kind not in ("pipeline", "synthetic"):
    raise ValueError(f"config.data.kind={d.kind!r}: packed rows are made of 'pipeline' or 'synthetic' data; "
                     f"{d.kind!r} data is read by its objective (config.objective={config.get('objective', 'lm')!r})")
  kw = dict(seq_len=config.seq_len, global_batch_size=config.global_batch_size, seed=config.seed,
            process_index=jax.process_index(), process_count=jax.process_count())
  if d.kind == "synthetic":
    return SyntheticIterator(layout, split=split, **kw)
  from slm_jax.data.pipeline import make_iterator as pipeline_iterator
  sources = {k: v for k, v in d.sources.items() if v}
  weights = {k: v for k, v in d.weights.items() if k in sources}
  if not sources:
    raise ValueError("config.data.sources names no prepared folder (interleaved / speech / text)")
  return pipeline_iterator(sources, weights, tokenizer, layout, split=split, interleave_mode=d.interleave_mode,
                           num_epochs=num_epochs, num_workers=d.num_workers,
                           add_eos=config.vocab.layout == "slam", **kw)


def global_batch(host_batch: dict, mesh: Mesh, extra_keys: tuple[str, ...] = ()) -> dict:
  """Host-local numpy batch -> dict of global jax.Arrays sharded over the batch axes of `mesh`; `extra_keys` (an
  objective's, e.g. DPO's stored `ref_logps`) are 1-D, sharded like the rows, and taken when present."""
  sh = batch_sharding(mesh)
  out = {k: jax.make_array_from_process_local_data(sh, np.asarray(host_batch[k])) for k in BATCH_KEYS}
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(sh.spec[0]))
  for k in extra_keys:
    if k in host_batch:
      out[k] = jax.make_array_from_process_local_data(rows, np.asarray(host_batch[k]))
  return out


def _as_bytes(state) -> bytes:
  if isinstance(state, bytes):
    return state
  return json.dumps(state, indent=4).encode()


class StateSnapshot:
  """An iterator's state taken now, saved later by grain's checkpoint handler (one file per process).

  The loop fetches batch i+1 while step i runs, so the live iterator is one batch ahead of what was trained on.
  """

  def __init__(self, iterator):
    self.state = iterator.get_state()

  def get_state(self) -> bytes:
    return _as_bytes(self.state)


class StateRestorer:
  """Receives the saved state from grain's handler and sets it on the live iterator (dict or bytes states)."""

  def __init__(self, iterator):
    self.iterator = iterator

  def set_state(self, state: bytes) -> None:
    probe = self.iterator.get_state()
    self.iterator.set_state(state if isinstance(probe, bytes) else json.loads(state.decode()))

  def start_prefetch(self) -> None:
    if hasattr(self.iterator, "start_prefetch"):
      self.iterator.start_prefetch()
