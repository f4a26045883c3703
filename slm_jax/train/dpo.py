"""Direct preference optimisation (DPO, Rafailov et al. 2023) as slamkit's Slam recipe runs it through trl.

Batches hold pairs as consecutive rows: row 2i is prompt + chosen continuation of pair i, row 2i+1 the same
prompt + rejected continuation (the keys of `step.BATCH_KEYS`, `loss_mask` = 1 only where the target is a
continuation token, so prompt tokens never count), plus `ref_logps` [2 * pairs]: the reference model's summed
log-probs of the same continuation tokens, from `make_ref_logps` (reference model in memory) or stored with the
data by a first pass (only one model in memory). The log-probs come from `loss.token_logprobs`.

Shared-prompt rows (dpo.shared_prompt, `branches` here): one row per pair, the prompt once and the chosen and
rejected continuations as two branches that each see the prompt and themselves only (`data.preference.
shared_pair_row`, `model.transformer.Branches`); the same log-probs, loss and gradients with the prompt's tokens
computed once instead of twice. `ref_logps` stays [2 * pairs] (chosen, rejected alternating).

Losses (h = (pi_c - ref_c) - (pi_r - ref_r), summed continuation log-probs; trl's names):
  sigmoid  -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)    (eps = label_smoothing: conservative DPO)
  ipo      (h' - 1 / (2 beta))^2 with h' from per-token mean log-probs (trl's length normalisation)
Metrics as trl logs them: rewards/chosen, rewards/rejected (beta * log ratio), rewards/accuracies,
rewards/margins, logps/chosen, logps/rejected (means over the pairs).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from slm_jax.sharding import constrain
from slm_jax.train.loss import kind_nll_sums, token_logprobs
from slm_jax.train.step import BATCH_KEYS, batch_sharding, global_norm, jit_eval_step, jit_train_step

LOSS_TYPES = ("sigmoid", "ipo")
DPO_KEYS = BATCH_KEYS + ("ref_logps",)
METRIC_NAMES = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected")


def option_problems(beta, loss_type, label_smoothing) -> list[str]:
  """Every problem of the loss options (empty when valid); train/validate.py lists them with the config's."""
  num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)  # noqa: E731
  out = []
  if loss_type not in LOSS_TYPES:
    out.append(f"dpo.loss_type={loss_type!r}: expected one of {', '.join(LOSS_TYPES)}")
  if not num(beta) or beta <= 0:
    out.append(f"dpo.beta={beta!r} must be positive")
  if not num(label_smoothing) or not 0.0 <= label_smoothing < 0.5:
    out.append(f"dpo.label_smoothing={label_smoothing!r} must lie in [0, 0.5)")
  elif loss_type != "sigmoid" and label_smoothing:
    out.append(f"dpo.label_smoothing={label_smoothing!r} applies to the sigmoid loss only "
               f"(dpo.loss_type={loss_type!r})")
  return out


def check_options(beta: float, loss_type: str, label_smoothing: float) -> None:
  """Raises ValueError naming every problem of the loss options."""
  found = option_problems(beta, loss_type, label_smoothing)
  if found:
    raise ValueError("; ".join(found))


def sequence_sums(x: jax.Array, branches=None) -> jax.Array:
  """[rows, T] -> [2 * pairs] sums over each sequence (chosen, rejected alternating): a row's, or with
  shared-prompt rows (`branches`) each branch's."""
  if branches is None:
    return x.sum(-1)
  if branches.count != 2:
    raise ValueError(f"DPO rows hold 2 branches (chosen, rejected), got {branches}")
  P, L = branches.prefix, branches.length
  return jnp.stack([x[:, P + b * L:P + (b + 1) * L].sum(-1) for b in range(2)], axis=1).reshape(-1)


def sequence_logps(graphdef, params, batch: dict, loss_chunk: int = 512,
                   branches=None) -> tuple[jax.Array, jax.Array]:
  """(sum of log p over each sequence's continuation tokens [2 * pairs], per-token log p [rows, T])."""
  model = nnx.merge(graphdef, params)
  hidden = model(batch["input_ids"], batch["positions"], batch["segment_ids"], branches=branches)
  lp = token_logprobs(model, hidden, batch["targets"], chunk_size=loss_chunk)
  lp = jnp.where(batch["loss_mask"] > 0, lp, 0.0)
  return sequence_sums(lp, branches), lp


def dpo_loss(policy_logps: jax.Array, ref_logps: jax.Array, counts: jax.Array, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> tuple[jax.Array, dict]:
  """Per-pair losses [pairs] and per-pair metrics from summed log-probs [2 * pairs] (chosen, rejected rows
  alternating) and continuation token counts [2 * pairs]."""
  pc, pr = policy_logps[0::2], policy_logps[1::2]
  rc, rr = ref_logps[0::2], ref_logps[1::2]
  chosen_ratio, rejected_ratio = pc - rc, pr - rr
  if loss_type == "sigmoid":
    h = chosen_ratio - rejected_ratio
    losses = (-jax.nn.log_sigmoid(beta * h) * (1.0 - label_smoothing)
              - jax.nn.log_sigmoid(-beta * h) * label_smoothing)
  elif loss_type == "ipo":
    n = jnp.maximum(counts, 1.0)
    h = chosen_ratio / n[0::2] - rejected_ratio / n[1::2]
    losses = (h - 1.0 / (2.0 * beta)) ** 2
  else:
    raise ValueError(f"unknown DPO loss_type {loss_type!r} (expected one of {', '.join(LOSS_TYPES)})")
  rc_, rr_ = jax.lax.stop_gradient(beta * chosen_ratio), jax.lax.stop_gradient(beta * rejected_ratio)
  metrics = {"rewards/chosen": rc_, "rewards/rejected": rr_,
             "rewards/accuracies": (rc_ > rr_).astype(jnp.float32), "rewards/margins": rc_ - rr_,
             "logps/chosen": jax.lax.stop_gradient(pc), "logps/rejected": jax.lax.stop_gradient(pr)}
  return losses, metrics


def split_pairs(batch: dict, n: int, branches=None) -> dict:
  """[rows, ...] -> [n, rows / n, ...] keeping each pair's rows and values together (micro-batch k: pairs k, k+n,
  ...): two rows per pair, or one shared-prompt row (`branches`); `ref_logps` has two values per pair."""
  rows = batch["input_ids"].shape[0]
  pairs = rows if branches is not None else rows // 2
  if pairs % n:
    raise ValueError(f"{pairs} pairs do not divide into micro_batches={n}")

  def one(x):
    per = x.shape[0] // pairs
    y = x.reshape(pairs // n, n, per, *x.shape[1:]).swapaxes(0, 1).reshape(n, per * (pairs // n), *x.shape[1:])
    return constrain(y, (None, "batch", "length")[:y.ndim])
  return {k: one(v) for k, v in batch.items()}


def _pair_sums(graphdef, params, mb, beta, loss_type, label_smoothing, loss_chunk, valid, branches=None):
  """(sum of pair losses, aux sums) of one micro-batch; `valid` [pairs] drops empty padding pairs."""
  logps, lp = sequence_logps(graphdef, params, mb, loss_chunk, branches)
  m = mb["loss_mask"].astype(jnp.float32)
  counts = sequence_sums(m, branches)
  losses, per_pair = dpo_loss(logps, mb["ref_logps"].astype(jnp.float32), counts, beta, loss_type,
                              label_smoothing)
  losses = jnp.where(valid, losses, 0.0)
  kind_sum, kind_count = kind_nll_sums(jax.lax.stop_gradient(lp), m, mb["kind"])
  sums = {k: jnp.where(valid, v, 0.0).sum() for k, v in per_pair.items()}
  return losses.sum(), (sums, valid.astype(jnp.float32).sum(), m.sum(), kind_sum, kind_count)


def pair_valid(batch: dict, branches=None) -> jax.Array:
  """[pairs] bool: pairs with at least one label (empty padding pairs are False)."""
  m = batch["loss_mask"]
  return (m.sum(-1) if branches is not None else m.reshape(-1, 2, m.shape[-1]).sum((1, 2))) > 0


def batch_loss(graphdef, params, batch: dict, *, beta: float = 0.1, loss_type: str = "sigmoid",
               label_smoothing: float = 0.0, loss_chunk: int = 512, branches=None) -> tuple[jax.Array, dict]:
  """(mean DPO loss over the batch's pairs, trl metrics averaged over them): the objective of `make_dpo_step`."""
  valid = pair_valid(batch, branches)
  total, (sums, pairs, _, _, _) = _pair_sums(graphdef, params, batch, beta, loss_type, label_smoothing, loss_chunk,
                                             valid, branches)
  n = jnp.maximum(pairs, 1.0)
  return total / n, {k: v / n for k, v in sums.items()}


def make_dpo_step(graphdef, tx: optax.GradientTransformation, lr_fn: Callable | None = None, *, beta: float = 0.1,
                  loss_type: str = "sigmoid", label_smoothing: float = 0.0, micro_batches: int = 1,
                  loss_chunk: int = 512, nan_at_step: int = 0, branches=None):
  """step(params, opt_state, batch, step) -> (params, opt_state, metrics), like `step.make_train_step`.

  The loss is the mean over the global batch's pairs (also across micro-batches); `count` is the number of
  continuation label tokens (the trainer's token count); a non-finite loss or gradient keeps the old state.
  """
  check_options(beta, loss_type, label_smoothing)

  def step(params, opt_state, batch, step_no):
    batch = {k: batch[k] for k in DPO_KEYS}
    pairs_total = batch["ref_logps"].shape[0] // 2

    def loss_fn(p, mb):
      total, aux = _pair_sums(graphdef, p, mb, beta, loss_type, label_smoothing, loss_chunk,
                              pair_valid(mb, branches), branches)
      if nan_at_step > 0:
        total = total * jnp.where(step_no + 1 == nan_at_step, jnp.nan, 1.0)
      return total / pairs_total, (total, aux)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if micro_batches == 1:
      (_, (total, aux)), grads = grad_fn(params, batch)
    else:
      def body(acc, mb):
        g_acc, a_acc = acc
        (_, a), g = grad_fn(params, mb)
        return (jax.tree.map(lambda x, y: x + y.astype(jnp.float32), g_acc, g), jax.tree.map(jnp.add, a_acc, a)), None

      zeros_g = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params)
      zeros_a = (jnp.zeros(()), ({k: jnp.zeros(()) for k in METRIC_NAMES}, jnp.zeros(()), jnp.zeros(()),
                                 jnp.zeros(3), jnp.zeros(3)))
      (grads, (total, aux)), _ = jax.lax.scan(body, (zeros_g, zeros_a), split_pairs(batch, micro_batches, branches))
    sums, pairs, count, kind_sum, kind_count = aux
    scale = pairs_total / jnp.maximum(pairs, 1.0)  # padding pairs (validation) are not in the mean
    grads = jax.tree.map(lambda g, p: (g * scale).astype(p.dtype), grads, params)
    loss = total / jnp.maximum(pairs, 1.0)
    grad_norm = global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    metrics = {"loss": loss, "count": count, "kind_nll": kind_sum, "kind_count": kind_count,
               "grad_norm": grad_norm, "finite": finite.astype(jnp.int32), "pairs": pairs,
               "lr": jnp.asarray(lr_fn(step_no) if lr_fn is not None else 0.0, jnp.float32),
               **{k: v / jnp.maximum(pairs, 1.0) for k, v in sums.items()}}
    return keep(new_params, params), keep(new_opt, opt_state), metrics

  return step


def make_dpo_eval_step(graphdef, *, beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                       loss_chunk: int = 512, branches=None):
  """eval(params, batch) -> sums: nll (DPO loss) and count (pairs), so val_loss = mean pair loss; kind_nll /
  kind_count (policy NLL of the continuations); the trl metrics summed over pairs."""
  check_options(beta, loss_type, label_smoothing)

  def evaluate(params, batch):
    total, (sums, pairs, _, ks, kc) = _pair_sums(graphdef, params, batch, beta, loss_type, label_smoothing,
                                                  loss_chunk, pair_valid(batch, branches), branches)
    return {"nll": total, "count": pairs, "kind_nll": ks, "kind_count": kc, **sums}

  return evaluate


def make_ref_logps(graphdef, loss_chunk: int = 512, branches=None):
  """ref(params, batch) -> summed continuation log-probs [2 * pairs] (no gradient): the reference forward."""
  def ref(params, batch):
    return jax.lax.stop_gradient(sequence_logps(graphdef, params, batch, loss_chunk, branches)[0])
  return ref


def _batch_shardings(mesh: Mesh, keys) -> dict:
  bs = batch_sharding(mesh)
  rows = NamedSharding(mesh, P(*bs.spec[:1]))
  return {k: rows if k == "ref_logps" else bs for k in keys}


def jit_dpo_step(step_fn, mesh: Mesh, param_shardings, opt_shardings):
  """`step.jit_train_step` of a DPO step: the batch with `ref_logps` (one value per sequence, 2 per pair)."""
  return jit_train_step(step_fn, mesh, param_shardings, opt_shardings, _batch_shardings(mesh, DPO_KEYS))


def jit_dpo_eval(eval_fn, mesh: Mesh, param_shardings):
  return jit_eval_step(eval_fn, mesh, param_shardings, _batch_shardings(mesh, DPO_KEYS))


def jit_ref_logps(ref_fn, mesh: Mesh, param_shardings):
  """jax.jit of the reference forward; run(ref_params, batch) -> [2 * pairs] sharded like the batch rows."""
  jitted = jax.jit(ref_fn, in_shardings=(param_shardings, _batch_shardings(mesh, BATCH_KEYS)),
                   out_shardings=_batch_shardings(mesh, ("ref_logps",))["ref_logps"])

  def run(params, batch):
    with jax.set_mesh(mesh):
      return jitted(params, {k: batch[k] for k in BATCH_KEYS})

  run.jitted = jitted
  return run


def abstract_ref_logps(rows: int, mesh: Mesh) -> jax.ShapeDtypeStruct:
  """The batch key `ref_logps` of a DPO step: one float32 per sequence (2 per pair), sharded like the rows."""
  return jax.ShapeDtypeStruct((rows,), np.float32, sharding=_batch_shardings(mesh, ("ref_logps",))["ref_logps"])


# ---------------------------------------------------------------------------------------------------- in the trainer

class DPOParts:
  """What the trainer needs besides the jitted steps: the reference forward and the reference it runs on."""

  def __init__(self, ref_run, reference_mode: str):
    self.ref_run, self.mode, self.params = ref_run, reference_mode, None

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
      return dict(batch, ref_logps=np.zeros((batch["input_ids"].shape[0],), np.float32))
    raise ValueError("DPO batch without ref_logps and no reference model bound (config.dpo.reference='model')")


REFERENCES = ("model", "precomputed")


def config_branches(config):
  """The `Branches` of the run's shared-prompt rows (config.dpo.shared_prompt), else None (two rows per pair)."""
  if config.get("objective", "lm") != "dpo" or not config.dpo.get("shared_prompt", False):
    return None
  from slm_jax.data.preference import shared_branches
  return shared_branches(config.seq_len, config.dpo.max_prompt_len or None)


def batch_shape(config) -> tuple[int, int]:
  """(rows, row length) of a global batch: global_batch_size rows of seq_len (DPO: 2 per pair), or with
  dpo.shared_prompt one row per pair of `config_branches(config).total`."""
  br = config_branches(config)
  if br is None:
    return config.global_batch_size, config.seq_len
  return config.global_batch_size // 2, br.total


def config_problems(config, process_count: int = 1) -> list[str]:
  """Every problem of a config with objective='dpo' that needs no files (train/validate.py adds the paths):
  preference data, an even global batch whose pairs divide into micro-batches and processes, the loss options
  (`option_problems`), the reference mode and a prompt shorter than the sequence."""
  c, d = config, config.dpo
  out = []
  if c.data.kind != "preference":
    out.append(f"config.data.kind={c.data.kind!r}: objective='dpo' trains on preference pairs (set 'preference' "
               "and config.data.sources.preference)")
  if not c.data.sources.get("preference", ""):
    out.append("config.data.sources.preference: empty, but objective='dpo' reads its pairs from there "
               "(tools/prepare_data.py --kind=preference)")
  b, n = c.global_batch_size, c.micro_batches
  if isinstance(b, int) and b >= 1:
    if b % 2:
      out.append(f"config.global_batch_size={b}: DPO counts rows, 2 per pair (chosen, rejected): it must be even")
    elif isinstance(n, int) and n >= 1 and (b // 2) % n:
      out.append(f"config.global_batch_size={b} holds {b // 2} pairs: they do not divide into micro_batches={n} "
                 "(a pair's two rows stay in one micro-batch)")
    elif b % 2 == 0 and (b // 2) % process_count:
      out.append(f"config.global_batch_size={b} holds {b // 2} pairs: they do not divide over {process_count} "
                 "processes")
  out += [f"config.{p}" for p in option_problems(d.beta, d.loss_type, d.label_smoothing)]
  if d.reference not in REFERENCES:
    out.append(f"config.dpo.reference={d.reference!r}: expected one of {', '.join(REFERENCES)}")
  m = d.max_prompt_len
  if not isinstance(m, int) or isinstance(m, bool) or m < 0:
    out.append(f"config.dpo.max_prompt_len={m!r}: must be an integer >= 0 (0: seq_len // 2)")
  elif isinstance(c.seq_len, int) and c.seq_len >= 1 and m >= c.seq_len:
    out.append(f"config.dpo.max_prompt_len={m} must be below config.seq_len={c.seq_len} (no room for the "
               "continuation)")
  if d.get("shared_prompt", False) and c.model.get("attention_impl", "auto") == "splash":
    out.append("config.dpo.shared_prompt=True needs attention_impl xla, cudnn or auto (the splash kernel has no "
               "branch mask): set config.model.attention_impl, or shared_prompt=False")
  return out


def build_steps(config, graphdef, tx, lr_fn, mesh: Mesh, param_shardings, opt_shardings):
  """(train_step, eval_step, DPOParts) of `config.objective == 'dpo'` for `program.build_program`."""
  d = config.dpo
  found = config_problems(config)
  if found:
    raise ValueError("invalid DPO config: " + "; ".join(found))
  branches = config_branches(config)
  kw = dict(beta=d.beta, loss_type=d.loss_type, label_smoothing=d.label_smoothing, loss_chunk=config.loss_chunk,
            branches=branches)
  step = jit_dpo_step(make_dpo_step(graphdef, tx, lr_fn, micro_batches=config.micro_batches,
                                    nan_at_step=config.inject_nan_at_step, **kw), mesh, param_shardings, opt_shardings)
  ev = jit_dpo_eval(make_dpo_eval_step(graphdef, **kw), mesh, param_shardings)
  parts = DPOParts(jit_ref_logps(make_ref_logps(graphdef, config.loss_chunk, branches), mesh, param_shardings),
                   d.reference)

  def train_step(params, opt_state, batch, step_no):
    return step(params, opt_state, parts.with_ref(batch), step_no)

  def eval_step(params, batch):
    return ev(params, parts.with_ref(batch))

  train_step.jitted = step.jitted
  return train_step, eval_step, parts


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
  import hashlib
  import json
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
  import hashlib
  import json
  import os
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
  import os
  import time
  from jax.experimental import multihost_utils
  from slm_jax.data.preference import PreferenceIterator
  from slm_jax.train.data import global_batch
  t0, out = time.time(), {}
  for split in ("train", "validation"):
    it = PreferenceIterator(config.data.sources.preference, split, layout, seq_len=config.seq_len,
                            global_batch_size=config.global_batch_size // 2, seed=config.seed,
                            process_index=jax.process_index(), process_count=jax.process_count(), num_epochs=1,
                            shuffle=False, max_prompt_len=config.dpo.max_prompt_len or None,
                            shared_prompt=config.dpo.get("shared_prompt", False))
    ref = np.zeros((it.n, 2), np.float32)
    for b in it:
      lp = prog.dpo.ref_run(params, global_batch(b, prog.mesh))
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
  import os
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
    from slm_jax.train.init import fresh_start
    ref = jax.device_put(fresh_start(config, prog.mesh, param_dtype, dtype).params, prog.param_shardings)
    now = params_fingerprint(ref) if fingerprint is not None else None
    if now != fingerprint:
      raise ValueError(f"config.init (kind {config.init.kind!r}, path {config.init.path!r}) now holds other weights "
                       f"than this DPO run started from (fingerprint {now}, recorded "
                       f"{fingerprint}): its frozen reference would change mid-run. Restore the original "
                       "checkpoint at that path, or start a new run in another workdir")
  prog.dpo.bind_reference(ref)
