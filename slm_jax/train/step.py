"""The SIMS train step (docs/reference.md §5) as a pure function of (params, opt_state, batch), and its sharded jit.

The NNX model is split once; `params` is its pure dict (the Orbax PARAMS item). The loss is the sum of
-log p over every unmasked label of the global batch divided once by their count, also across gradient
accumulation micro-batches (a lax.scan that sums gradients and counts). Log-probs come from
`loss.token_logprobs` (fp32, chunked over the sequence). A step whose loss or gradient is not finite
leaves params and optimizer state unchanged and reports `finite = 0`; the loop stops on it.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from slm_jax.data.packing import BATCH_KEYS
from slm_jax.sharding import constrain, logical_to_spec
from slm_jax.train.loss import fused_nll_sum, kind_nll_sums, token_logprobs



def _sums(graphdef, params, mb, loss_chunk: int, packed: bool = True, fused: bool = False):
  """(nll sum, count, per-kind nll sums [3], per-kind counts [3]) of one micro-batch.

  packed=False ignores segment ids and positions: every row is one causal document (benchmarks).
  fused=True takes the sum from `loss.fused_nll_sum` (gradient formed in the forward pass, training only).
  """
  model = nnx.merge(graphdef, params)
  if packed:
    hidden = model(mb["input_ids"], mb["positions"], mb["segment_ids"])
  else:
    hidden = model(mb["input_ids"])
  m = mb["loss_mask"].astype(jnp.float32)
  if fused:
    nll_sum, nll = fused_nll_sum(model, hidden, mb["targets"], m, chunk_size=loss_chunk)
    lp = -nll
  else:
    lp = token_logprobs(model, hidden, mb["targets"], chunk_size=loss_chunk)
    nll_sum = jnp.where(m > 0, -lp, 0.0).sum()
  kind_sum, kind_count = kind_nll_sums(jax.lax.stop_gradient(lp), m, mb["kind"])
  return nll_sum, m.sum(), kind_sum, kind_count


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


def make_train_step(graphdef, tx: optax.GradientTransformation, lr_fn: Callable | None = None, *,
                    micro_batches: int = 1, loss_chunk: int = 512, nan_at_step: int = 0, packed: bool = True,
                    fused_loss: bool = True, param_shardings=None):
  """step(params, opt_state, batch, step) -> (params, opt_state, metrics). Pure; jit it with `jit_train_step`.

  param_shardings: the params' NamedShardings; the fp32 gradient accumulator of micro-batching is held in
  them (otherwise XLA may keep it whole on every device).

  fused_loss: take the loss gradient from `loss.fused_nll_sum` (no logits recomputation in the backward pass);
  False differentiates through `loss.token_logprobs` instead (same values, more FLOPs).
  `nan_at_step` > 0 plants a NaN in the loss of that (1-based) step, to test the non-finite stop.
  """

  def step(params, opt_state, batch, step_no):
    batch = {k: batch[k] for k in BATCH_KEYS}
    tokens = batch["input_ids"].shape[0] * batch["input_ids"].shape[1]
    scale = 1.0 / tokens  # static normaliser keeps summed gradients in range; the true count is divided later

    def loss_fn(p, mb):
      nll_sum, count, ks, kc = _sums(graphdef, p, mb, loss_chunk, packed, fused_loss)
      if nan_at_step > 0:
        nll_sum = nll_sum * jnp.where(step_no + 1 == nan_at_step, jnp.nan, 1.0)
      return nll_sum * scale, (nll_sum, count, ks, kc)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if micro_batches == 1:
      (_, aux), grads = grad_fn(params, batch)
    else:
      mbs = split_micro_batches(batch, micro_batches)

      def body(acc, mb):
        g_acc, a_acc = acc
        (_, aux), g = grad_fn(params, mb)
        return (jax.tree.map(lambda x, y: x + y.astype(jnp.float32), g_acc, g),
                jax.tree.map(jnp.add, a_acc, aux)), None

      zeros_g = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params)
      if param_shardings is not None:
        zeros_g = jax.lax.with_sharding_constraint(zeros_g, param_shardings)
      zeros_a = (jnp.zeros(()), jnp.zeros(()), jnp.zeros(3), jnp.zeros(3))
      (grads, aux), _ = jax.lax.scan(body, (zeros_g, zeros_a), mbs)
    nll_sum, count, kind_sum, kind_count = aux
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g, p: (g * (tokens / denom)).astype(p.dtype), grads, params)
    loss = nll_sum / denom
    grad_norm = global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    metrics = {"loss": loss, "count": count, "kind_nll": kind_sum, "kind_count": kind_count,
               "grad_norm": grad_norm, "finite": finite.astype(jnp.int32),
               "lr": jnp.asarray(lr_fn(step_no) if lr_fn is not None else 0.0, jnp.float32)}
    return keep(new_params, params), keep(new_opt, opt_state), metrics

  return step


def make_eval_step(graphdef, loss_chunk: int = 512):
  """eval(params, batch) -> {nll, count, kind_nll, kind_count} sums (add over batches, divide once)."""

  def evaluate(params, batch):
    nll_sum, count, ks, kc = _sums(graphdef, params, batch, loss_chunk)
    return {"nll": nll_sum, "count": count, "kind_nll": ks, "kind_count": kc}

  return evaluate


def batch_sharding(mesh: Mesh, seq_len: int | None = None) -> NamedSharding:
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
