"""The update step every objective shares, as a pure function of (params, opt_state, batch), and its sharded jit.

`make_step(loss_sums, ...)` holds what does not depend on the objective: micro-batches (a lax.scan that sums
gradients and sums), one division by the global batch's weight (label tokens, pairs) across micro-batches, the
optimizer (clipping included) and keep-if-finite: a step whose loss or gradient is not finite leaves params and
optimizer state unchanged and reports `finite = 0`; the loop stops on it. The objectives (`train/objective.py`)
supply `loss_sums`: language modelling's (docs/reference.md §5) in `train/lm.py`, DPO's in `train/dpo/`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from slm_jax.data.packing import BATCH_KEYS
from slm_jax.sharding import constrain, logical_to_spec


def split_micro_batches(batch: dict, n: int) -> dict:
  """[B, T] -> [n, B/n, T]; micro-batch k holds rows k, k+n, ... so each device keeps its own rows."""
  def one(x):
    B = x.shape[0]
    if B % n:
      raise ValueError(f"batch size {B} is not divisible by micro_batches={n}")
    y = x.reshape(B // n, n, *x.shape[1:]).swapaxes(0, 1)
    return constrain(y, (None, "batch", "length"))
  return {k: one(v) for k, v in batch.items()}


def global_norm(tree) -> jax.Array:
  """sqrt(sum of squares) accumulated in fp32 whatever the gradient dtype."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


LossSums = Callable  # (params, micro-batch) -> (objective total, its weight, aux sums): see `make_step`


def make_step(loss_sums: LossSums, tx: optax.GradientTransformation, lr_fn: Callable | None = None, *,
              normaliser: Callable[[dict], int], keys: tuple[str, ...] = BATCH_KEYS, micro_batches: int = 1,
              split: Callable[[dict, int], dict] | None = None, step_metrics: Callable | None = None,
              nan_at_step: int = 0, param_shardings=None):
  """step(params, opt_state, batch, step) -> (params, opt_state, metrics), the update of every objective.

  `loss_sums(params, mb)` gives (total, weight, aux) of one micro-batch: the objective over the global batch is
  sum(total) / sum(weight) (label tokens for language modelling, pairs for DPO); aux is a dict of sums with at least
  `tokens` (label tokens), `kind_nll` [3] and `kind_count` [3]. The gradient is taken of total / normaliser(batch)
  (a static size that keeps summed gradients in range), summed over micro-batches (a lax.scan; `split` makes
  them, default rows k, k+n, ...), then rescaled once by normaliser / sum(weight). Clipping is the optimizer's.
  A step whose loss or gradient is not finite keeps the old params and optimizer state and reports finite = 0.
  `step_metrics(aux, weight)` adds the objective's own metrics. `nan_at_step` > 0 plants a NaN in the loss of that
  (1-based) step, to test the non-finite stop. `param_shardings`: the params' NamedShardings; the fp32
  gradient accumulator of micro-batching is held in them (otherwise XLA may keep it whole on every device).
  """
  split = split or split_micro_batches

  def step(params, opt_state, batch, step_no):
    batch = {k: batch[k] for k in keys}
    norm = normaliser(batch)

    def loss_fn(p, mb):
      total, weight, aux = loss_sums(p, mb)
      if nan_at_step > 0:
        total = total * jnp.where(step_no + 1 == nan_at_step, jnp.nan, 1.0)
      return total / norm, (total, weight, aux)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if micro_batches == 1:
      (_, sums), grads = grad_fn(params, batch)
    else:
      mbs = split(batch, micro_batches)

      def body(acc, mb):
        g_acc, s_acc = acc
        (_, s), g = grad_fn(params, mb)
        return (jax.tree.map(lambda x, y: x + y.astype(jnp.float32), g_acc, g), jax.tree.map(jnp.add, s_acc, s)), None

      zeros_g = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params)
      if param_shardings is not None:
        zeros_g = jax.lax.with_sharding_constraint(zeros_g, param_shardings)
      first = jax.tree.map(lambda x: x[0], mbs)
      zeros_s = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype),
                             jax.eval_shape(lambda p, mb: loss_fn(p, mb)[1], params, first))
      (grads, sums), _ = jax.lax.scan(body, (zeros_g, zeros_s), mbs)
    total, weight, aux = sums
    denom = jnp.maximum(weight, 1.0)
    grads = jax.tree.map(lambda g, p: (g * (norm / denom)).astype(p.dtype), grads, params)
    loss = total / denom
    grad_norm = global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    metrics = {"loss": loss, "count": aux["tokens"], "kind_nll": aux["kind_nll"], "kind_count": aux["kind_count"],
               "grad_norm": grad_norm, "finite": finite.astype(jnp.int32),
               "lr": jnp.asarray(lr_fn(step_no) if lr_fn is not None else 0.0, jnp.float32),
               **(step_metrics(aux, weight) if step_metrics is not None else {})}
    return keep(new_params, params), keep(new_opt, opt_state), metrics

  return step


def make_eval(loss_sums: LossSums):
  """eval(params, batch) -> sums to add over batches: nll (the objective's total), count (its weight), kind_nll,
  kind_count and the objective's other aux sums; val_loss = nll / count."""

  def evaluate(params, batch):
    total, weight, aux = loss_sums(params, batch)
    out = {k: v for k, v in aux.items() if k != "tokens"}
    return {"nll": total, "count": weight, **out}

  return evaluate


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows over the mesh's batch axes (data x fsdp), positions over none."""
  return NamedSharding(mesh, logical_to_spec(("batch", "length"), None, mesh))


def opt_state_shardings(tx, abstract_params, param_shardings, mesh: Mesh):
  """NamedShardings of `tx`'s state: every parameter-shaped leaf (moments, master copies) gets exactly its
  parameter's sharding, whatever nesting optax uses (chain, masked, inject_hyperparams); other leaves
  (step counts, scalars) are replicated. XLA left alone replicates the state (its zeros do not depend on the
  params), so it must be given explicitly."""
  rep = NamedSharding(mesh, P())
  abstract_opt = jax.eval_shape(tx.init, abstract_params)

  def like_param(leaf, param, sh):
    if leaf is None or isinstance(leaf, optax.MaskedNode):
      return leaf
    if tuple(leaf.shape) != tuple(param.shape):
      raise ValueError(f"optimizer state leaf {leaf.shape} does not have its parameter's shape {param.shape}")
    return sh

  return optax.tree_map_params(tx, like_param, abstract_opt, abstract_params, param_shardings,
                               transform_non_params=lambda x: rep,
                               is_leaf=lambda x: isinstance(x, optax.MaskedNode))


def compile_opt_init(tx, abstract_params, param_shardings, mesh: Mesh):
  """(tx.init jitted, its output NamedShardings on `mesh`, from `opt_state_shardings`)."""
  out = opt_state_shardings(tx, abstract_params, param_shardings, mesh)
  return jax.jit(tx.init, in_shardings=(param_shardings,), out_shardings=out), out


def jit_train_step(step_fn, mesh: Mesh, param_shardings, opt_shardings, batch_shardings: dict | None = None):
  """jax.jit with explicit in/out shardings; params and optimizer state are donated. `batch_shardings` (by key)
  defaults to the training batch's keys, rows sharded like `batch_sharding`."""
  batch_sh = batch_shardings or {k: batch_sharding(mesh) for k in BATCH_KEYS}
  rep = NamedSharding(mesh, P())
  jitted = jax.jit(step_fn, in_shardings=(param_shardings, opt_shardings, batch_sh, rep),
                   out_shardings=(param_shardings, opt_shardings, rep), donate_argnums=(0, 1))

  def run(params, opt_state, batch, step_no):
    with jax.set_mesh(mesh):
      return jitted(params, opt_state, {k: batch[k] for k in batch_sh}, jnp.asarray(step_no, jnp.int32))

  run.jitted = jitted
  return run


def jit_eval_step(eval_fn, mesh: Mesh, param_shardings, batch_shardings: dict | None = None):
  batch_sh = batch_shardings or {k: batch_sharding(mesh) for k in BATCH_KEYS}
  jitted = jax.jit(eval_fn, in_shardings=(param_shardings, batch_sh), out_shardings=NamedSharding(mesh, P()))

  def run(params, batch):
    with jax.set_mesh(mesh):
      return jitted(params, {k: batch[k] for k in batch_sh})

  return run
