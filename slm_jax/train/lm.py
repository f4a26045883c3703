"""Language modelling, the SIMS objective (docs/reference.md §5): the sum of -log p over every unmasked label of
the global batch divided once by their count, also across micro-batches. Log-probs come from
`model.logprobs` (fp32, chunked over the sequence; training takes the fused loss gradient).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from slm_jax.train import step as step_lib
from slm_jax.train.loss import fused_nll_sum, kind_nll_sums, token_logprobs
from slm_jax.train.objective import Objective, row_slots


def loss_sums(graphdef, loss_chunk: int = 512, packed: bool = True, fused: bool = False) -> Callable:
  """(params, mb) -> (nll sum, label count, {tokens, kind_nll [3], kind_count [3]}) of one micro-batch.

  packed=False ignores segment ids and positions: every row is one causal document (benchmarks).
  fused=True takes the sum from `loss.fused_nll_sum` (gradient formed in the forward pass, training only).
  """

  def sums(params, mb):
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
    count = m.sum()
    return nll_sum, count, {"tokens": count, "kind_nll": kind_sum, "kind_count": kind_count}

  return sums


def make_train_step(graphdef, tx: optax.GradientTransformation, lr_fn: Callable | None = None, *,
                    micro_batches: int = 1, loss_chunk: int = 512, nan_at_step: int = 0, packed: bool = True,
                    fused_loss: bool = True, param_shardings=None):
  """step(params, opt_state, batch, step) -> (params, opt_state, metrics) of language modelling; jit it with
  `step.jit_train_step`. fused_loss: take the loss gradient from `loss.fused_nll_sum` (no logits recomputation in
  the backward pass); False differentiates through `loss.token_logprobs` (same values, more FLOPs)."""
  return step_lib.make_step(loss_sums(graphdef, loss_chunk, packed, fused_loss), tx, lr_fn, normaliser=row_slots,
                            micro_batches=micro_batches, nan_at_step=nan_at_step, param_shardings=param_shardings)


class LanguageModelling(Objective):
  """Next-token pre-training on packed text, speech and interleaved rows (data.kind pipeline or synthetic)."""

  name = "lm"
  data_kinds = ("pipeline", "synthetic")
  data_about = "'pipeline' or 'synthetic' data (packed rows)"

  def loss_sums(self, config, graphdef, training: bool):
    return loss_sums(graphdef, config.loss_chunk, fused=training and config.fused_loss)
