"""The frozen DPO reference: its forward (summed continuation log-probs), the run-time holder the trainer binds it
to, the exact fingerprint of the starting weights that keys it, and the pre-pass that stores its log-probs with the
data (dpo.reference='precomputed', only one model in memory).
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from slm_jax.data.preference import PreferenceIterator
from slm_jax.train.data import global_batch
from slm_jax.train.dpo.loss import sequence_logps
from slm_jax.train.init import fresh_start

REFERENCES = ("model", "precomputed")


def pairs_iterator(config, layout, split: str, *, num_epochs=None, shuffle: bool = True, ref_logps: str | None = None):
  """This process's iterator over the preference pairs of `split` (global_batch_size rows = pairs x 2), with the
  stored reference log-probs at `ref_logps` (an npz of `precompute_reference`) when given."""
  return PreferenceIterator(config.data.sources.preference, split, layout, seq_len=config.seq_len,
                            global_batch_size=config.global_batch_size // 2, seed=config.seed,
                            process_index=jax.process_index(), process_count=jax.process_count(),
                            num_epochs=num_epochs, shuffle=shuffle, max_prompt_len=config.dpo.max_prompt_len or None,
                            shared_prompt=config.dpo.get("shared_prompt", False), ref_logps=ref_logps)


def make_ref_logps(graphdef, loss_chunk: int = 512, branches=None):
  """ref(params, batch) -> summed continuation log-probs [2 * pairs] (no gradient): the reference forward."""
  def ref(params, batch):
    return jax.lax.stop_gradient(sequence_logps(graphdef, params, batch, loss_chunk, branches)[0])
  return ref


def jit_ref_logps(ref_fn, mesh: Mesh, param_shardings, batch_shardings: dict):
  """jax.jit of the reference forward; run(ref_params, batch) -> [2 * pairs] sharded like the batch rows
  (`batch_shardings`: the step batch's, with `ref_logps`)."""
  in_sh = {k: v for k, v in batch_shardings.items() if k != "ref_logps"}
  jitted = jax.jit(ref_fn, in_shardings=(param_shardings, in_sh), out_shardings=batch_shardings["ref_logps"])

  def run(params, batch):
    with jax.set_mesh(mesh):
      return jitted(params, {k: batch[k] for k in in_sh})

  run.jitted = jitted
  return run


class Reference:
  """What the trainer needs besides the jitted steps: the reference forward and the reference it runs on."""

  def __init__(self, ref_run, reference_mode: str, per_row: int = 1):
    self.ref_run, self.mode, self.per_row, self.params = ref_run, reference_mode, per_row, None

  def bind_reference(self, params) -> None:
    self.params = params

  def with_ref(self, batch: dict) -> dict:
    """The batch with `ref_logps`: stored ones, else the bound reference model's, else zeros (only empty
    padding batches of a precomputed run come without them)."""
    if "ref_logps" in batch:
      return batch
    if self.params is not None:
      return dict(batch, ref_logps=self.ref_run(self.params, batch))
    if self.mode == "precomputed":
      return dict(batch, ref_logps=np.zeros((batch["input_ids"].shape[0] * self.per_row,), np.float32))
    raise ValueError("DPO batch without ref_logps and no reference model bound (config.dpo.reference='model')")


_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}


def _leaf_sums(x: jax.Array) -> jax.Array:
  """[3] uint32 of one array: sums (mod 2^32) of its bit patterns u, of u * h(flat index) and of u * u. Integer
  sums are exact in any order, so the result does not depend on the sharding or the device count."""
  u = jax.lax.bitcast_convert_type(x, _UINT[x.dtype.itemsize]).astype(jnp.uint32)
  idx = jnp.zeros(x.shape, jnp.uint32)
  stride = 1
  for d in reversed(range(x.ndim)):
    idx = idx + jax.lax.broadcasted_iota(jnp.uint32, x.shape, d) * jnp.uint32(stride % 2**32)
    stride *= x.shape[d]
  h = idx * jnp.uint32(0x9E3779B1) + jnp.uint32(0x7F4A7C15)
  h = h ^ (h >> 15)
  return jnp.stack([u.sum(dtype=jnp.uint32), (u * h).sum(dtype=jnp.uint32), (u * u).sum(dtype=jnp.uint32)])


def params_fingerprint(params) -> str:
  """16 hex digits identifying a parameter tree exactly (every bit of every leaf, its path, shape and dtype),
  whatever its sharding: per-leaf integer sums computed where the params live (one small jitted reduction, no
  host copy of the weights), hashed on the host."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  if not leaves:
    return hashlib.sha256(b"[]").hexdigest()[:16]
  sh = getattr(leaves[0][1], "sharding", None)
  out_sh = NamedSharding(sh.mesh, P()) if isinstance(sh, NamedSharding) else None
  sums = jax.jit(lambda xs: jnp.stack([_leaf_sums(x) for x in xs]), out_shardings=out_sh)([x for _, x in leaves])
  sums = np.asarray(sums.addressable_data(0)).tolist()
  desc = [[jax.tree_util.keystr(k), list(x.shape), str(x.dtype), s] for (k, x), s in zip(leaves, sums)]
  return hashlib.sha256(json.dumps(desc).encode()).hexdigest()[:16]


def reference_path(config, fingerprint: str) -> str:
  """Where precomputed reference log-probs are stored with the data: <preference folder>/reference_logps/<key>.npz,
  the key a hash of everything that fixes them: the reference weights' `params_fingerprint` (a checkpoint
  replaced at the same path gets new log-probs), init, model, vocabulary, seed, lengths, precision."""
  if not fingerprint:
    raise ValueError("precomputed DPO reference log-probs are keyed by the reference weights' fingerprint; none "
                     "given (a run started before fingerprints were recorded: start it again in a new workdir)")
  c = config
  key = json.dumps({"init": c.init.to_dict(), "model": c.model.to_dict(), "vocab": c.vocab.to_dict(),
                    "seed": c.seed, "seq_len": c.seq_len, "max_prompt_len": c.dpo.max_prompt_len,
                    "shared_prompt": c.dpo.get("shared_prompt", False),
                    "precision": c.precision, "weights": fingerprint}, sort_keys=True, default=str)
  name = hashlib.sha256(key.encode()).hexdigest()[:16]
  return os.path.join(c.data.sources.preference, "reference_logps", f"{name}.npz")


def check_reference_file(path: str, fingerprint: str) -> None:
  """Raises ValueError unless the log-probs at `path` were computed with weights of this fingerprint."""
  with np.load(path) as f:
    stored = str(f["fingerprint"]) if "fingerprint" in f.files else None
  if stored != fingerprint:
    raise ValueError(f"{path}: reference log-probs of other weights (fingerprint {stored or 'none recorded'}, this "
                     f"run's reference has {fingerprint}); delete the file so that a fresh DPO run recomputes it")


def precompute_reference(config, prog, layout, params, path: str, fingerprint: str, log=print) -> None:
  """One pass over the train and validation pairs with `params` (the reference): their summed continuation
  log-probs, written to `path` (npz: split -> [pairs, 2], chosen / rejected; `fingerprint`: the params'
  `params_fingerprint`) by process 0."""
  from jax.experimental import multihost_utils
  t0, out = time.time(), {}
  for split in ("train", "validation"):
    it = pairs_iterator(config, layout, split, num_epochs=1, shuffle=False)
    ref = np.zeros((it.n, 2), np.float32)
    for b in it:
      lp = prog.parts.ref_run(params, global_batch(b, prog.mesh))
      lp = np.asarray(multihost_utils.process_allgather(lp, tiled=True)).reshape(-1, 2)  # [pairs, 2]
      idx = np.asarray(multihost_utils.process_allgather(b["record_index"], tiled=True))
      idx = idx.reshape(len(lp), -1)[:, 0]  # rows -> pairs
      for j in np.flatnonzero(idx >= 0):
        ref[idx[j]] = lp[j]
    out[split] = ref
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **out, fingerprint=np.asarray(fingerprint))
    os.replace(tmp, path)
  multihost_utils.sync_global_devices("dpo reference log-probs written")
  log(f"reference log-probs of {len(out['train'])} + {len(out['validation'])} pairs written to {path} "
      f"({time.time() - t0:.0f} s)")


def prepare_reference(config, prog, layout, params, *, fresh: bool, param_dtype: str, dtype: str,
                      fingerprint: str | None) -> None:
  """Before the first step of a DPO run: bind the frozen reference (a copy of the starting params, or on resume
  the init reloaded), or make sure the precomputed reference log-probs exist (computed now on a fresh start).

  `fingerprint` is the `params_fingerprint` of the weights the run started from (recorded with its checkpoints):
  it keys the precomputed log-probs, which must carry it; on resume with the reference in memory, the reloaded
  init must still have it (a checkpoint replaced at init.path would silently change the reference mid-run).
  None (a run started before fingerprints were recorded) skips the check of the reloaded reference."""
  if config.dpo.reference == "precomputed":
    path = reference_path(config, fingerprint)
    if os.path.exists(path):
      check_reference_file(path, fingerprint)
    else:
      if not fresh:
        raise FileNotFoundError(f"{path}: the reference log-probs of this resumed DPO run are missing (they are "
                                "written before its first step); restore them or start the run again")
      precompute_reference(config, prog, layout, params, path, fingerprint)
    return
  if fresh:
    with jax.set_mesh(prog.mesh):
      ref = jax.tree.map(jnp.copy, params)  # the step donates the policy's buffers
  else:
    ref = jax.device_put(fresh_start(config, prog.mesh, param_dtype, dtype).params, prog.param_shardings)
    now = params_fingerprint(ref) if fingerprint is not None else None
    if now != fingerprint:
      raise ValueError(f"config.init (kind {config.init.kind!r}, path {config.init.path!r}) now holds other weights "
                       f"than this DPO run started from (fingerprint {now}, recorded "
                       f"{fingerprint}): its frozen reference would change mid-run. Restore the original "
                       "checkpoint at that path, or start a new run in another workdir")
  prog.parts.bind_reference(ref)
