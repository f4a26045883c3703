"""The loss math of direct preference optimisation (DPO, Rafailov et al. 2023) as slamkit's Slam recipe runs it through trl.

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

from slm_jax.sharding import constrain
from slm_jax.train.loss import kind_nll_sums, token_logprobs
from slm_jax.train.step import BATCH_KEYS, make_eval, make_step

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


def pair_sums(graphdef, *, beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
              loss_chunk: int = 512, branches=None) -> Callable:
  """(params, mb) -> (sum of pair losses, pairs with labels, {tokens, kind_nll, kind_count, trl metric sums}) of one
  micro-batch, the `step.make_step` loss sums of DPO; empty padding pairs (`pair_valid`) count nowhere."""
  check_options(beta, loss_type, label_smoothing)

  def sums(params, mb):
    valid = pair_valid(mb, branches)
    logps, lp = sequence_logps(graphdef, params, mb, loss_chunk, branches)
    m = mb["loss_mask"].astype(jnp.float32)
    counts = sequence_sums(m, branches)
    losses, per_pair = dpo_loss(logps, mb["ref_logps"].astype(jnp.float32), counts, beta, loss_type,
                                label_smoothing)
    losses = jnp.where(valid, losses, 0.0)
    kind_sum, kind_count = kind_nll_sums(jax.lax.stop_gradient(lp), m, mb["kind"])
    aux = {"tokens": m.sum(), "kind_nll": kind_sum, "kind_count": kind_count,
           **{k: jnp.where(valid, v, 0.0).sum() for k, v in per_pair.items()}}
    return losses.sum(), valid.astype(jnp.float32).sum(), aux

  return sums


def pair_valid(batch: dict, branches=None) -> jax.Array:
  """[pairs] bool: pairs with at least one label (empty padding pairs are False)."""
  m = batch["loss_mask"]
  return (m.sum(-1) if branches is not None else m.reshape(-1, 2, m.shape[-1]).sum((1, 2))) > 0


def batch_loss(graphdef, params, batch: dict, *, beta: float = 0.1, loss_type: str = "sigmoid",
               label_smoothing: float = 0.0, loss_chunk: int = 512, branches=None) -> tuple[jax.Array, dict]:
  """(mean DPO loss over the batch's pairs, trl metrics averaged over them): the objective of `make_dpo_step`."""
  total, pairs, aux = pair_sums(graphdef, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,
                                loss_chunk=loss_chunk, branches=branches)(params, batch)
  n = jnp.maximum(pairs, 1.0)
  return total / n, {k: aux[k] / n for k in METRIC_NAMES}


def step_metrics(aux: dict, pairs: jax.Array) -> dict:
  """The step's DPO metrics: `pairs` and the trl metrics averaged over them."""
  n = jnp.maximum(pairs, 1.0)
  return {"pairs": pairs, **{k: aux[k] / n for k in METRIC_NAMES}}


def step_options(branches=None) -> dict:
  """`step.make_step` options of DPO: the mean over the batch's pairs, micro-batches that keep each pair together."""
  return dict(normaliser=lambda b: b["ref_logps"].shape[0] // 2, split=lambda b, n: split_pairs(b, n, branches),
              step_metrics=step_metrics)


def make_dpo_step(graphdef, tx: optax.GradientTransformation, lr_fn: Callable | None = None, *, beta: float = 0.1,
                  loss_type: str = "sigmoid", label_smoothing: float = 0.0, micro_batches: int = 1,
                  loss_chunk: int = 512, nan_at_step: int = 0, branches=None, param_shardings=None):
  """step(params, opt_state, batch, step) -> (params, opt_state, metrics): `step.make_step` of `pair_sums`.

  The loss is the mean over the global batch's pairs (also across micro-batches); `count` is the number of
  continuation label tokens (the trainer's token count); a non-finite loss or gradient keeps the old state.
  """
  sums = pair_sums(graphdef, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,
                   loss_chunk=loss_chunk, branches=branches)
  return make_step(sums, tx, lr_fn, keys=DPO_KEYS, micro_batches=micro_batches, nan_at_step=nan_at_step,
                   param_shardings=param_shardings, **step_options(branches))


def make_dpo_eval_step(graphdef, *, beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                       loss_chunk: int = 512, branches=None):
  """eval(params, batch) -> sums: nll (DPO loss) and count (pairs), so val_loss = mean pair loss; kind_nll /
  kind_count (policy NLL of the continuations); the trl metrics summed over pairs."""
  return make_eval(pair_sums(graphdef, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,
                             loss_chunk=loss_chunk, branches=branches))
