"""AdamW with global-norm clipping and warmup + cosine decay to a minimum (docs/reference.md §5), and precision modes."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

# precision name -> (param_dtype, compute dtype, optimizer moment dtype)
PRECISIONS = {
    "fp32": ("float32", "float32", None),
    "mixed": ("float32", "bfloat16", None),        # fp32 master weights and AdamW state, bf16 compute
    "bf16": ("bfloat16", "bfloat16", "bfloat16"),  # slamkit: weights and AdamW state in bf16
}


def precision_dtypes(precision: str) -> tuple[str, str, str | None]:
  if precision not in PRECISIONS:
    raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
  return PRECISIONS[precision]


def warmup_steps(total_steps: int, warmup_frac: float, warmup_min_steps: int = 0) -> int:
  return min(total_steps, max(int(warmup_min_steps), int(math.ceil(warmup_frac * total_steps))))


def schedule(peak_lr: float, min_lr: float, total_steps: int, warmup: int) -> optax.Schedule:
  """0 -> peak linearly over `warmup` updates, then cosine to `min_lr` at `total_steps`, then flat."""
  total_steps = max(int(total_steps), 1)
  warmup = min(int(warmup), total_steps)
  if warmup == total_steps:
    return optax.linear_schedule(0.0, peak_lr, max(warmup, 1))
  return optax.warmup_cosine_decay_schedule(0.0, peak_lr, warmup, total_steps, end_value=min_lr)


def _decay_mask(params):
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(lr: optax.Schedule, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.0, clip_norm: float | None = 0.5,
                   moment_dtype: str | None = None) -> optax.GradientTransformation:
  """clip_by_global_norm -> AdamW. Weight decay (if any) skips 1-D parameters (norms, biases)."""
  parts = []
  if clip_norm:
    parts.append(optax.clip_by_global_norm(clip_norm))
  parts.append(optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                           mu_dtype=None if moment_dtype is None else jnp.dtype(moment_dtype),
                           mask=_decay_mask if weight_decay else None))
  return optax.chain(*parts)


def from_config(opt_cfg, total_steps: int, moment_dtype: str | None) -> tuple[optax.GradientTransformation,
                                                                               optax.Schedule]:
  """(optimizer, lr schedule) from the `optim` block of a training config."""
  warm = warmup_steps(total_steps, opt_cfg.warmup_frac, opt_cfg.get("warmup_min_steps", 0))
  lr = schedule(opt_cfg.lr, opt_cfg.min_lr, total_steps, warm)
  tx = make_optimizer(lr, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps, weight_decay=opt_cfg.weight_decay,
                      clip_norm=opt_cfg.clip_norm, moment_dtype=moment_dtype)
  return tx, lr
