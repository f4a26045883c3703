"""Compute accounting: analytic training FLOPs per token and the peak FLOP/s of the device (for MFU).

`flops_per_token` counts every matmul of one training step per token (forward + backward = 3x forward):
q/k/v/o and MLP projections, the output head over the logical vocabulary, and attention scores and
values with the causal half counted (each query attends on average to half the sequence). Embedding
lookups, norms, rope and softmax are not counted, as is usual for MFU. Remat recomputation is not counted
either (MFU counts useful work). `flops_per_token_6n` is the paper's C = 6 N D convention (docs/reference.md §5).
What one step of a run computes per row slot (a frozen reference's forward, shared-prompt rows) is its
objective's `flops_per_slot` (train/objective.py), built on these counts.
"""
from __future__ import annotations

import time

from slm_jax.model.config import ModelConfig


def matmul_params(cfg: ModelConfig) -> int:
  """Weights that take part in a matmul per token: projections of every layer plus the output head."""
  h, f, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
  q = cfg.num_attention_heads * cfg.head_dim
  kv = cfg.num_key_value_heads * cfg.head_dim
  per_layer = h * q + 2 * h * kv + q * h + 3 * h * f
  return L * per_layer + h * cfg.vocab_size


def attention_flops_per_token(cfg: ModelConfig, seq_len: int, causal: bool = True) -> float:
  """Forward FLOPs per token of q.k^T and probs.v over all layers (2 FLOPs per multiply-add)."""
  q = cfg.num_attention_heads * cfg.head_dim
  full = 2 * 2 * seq_len * q * cfg.num_hidden_layers
  return full / 2 if causal else full


def flops_per_token(cfg: ModelConfig, seq_len: int, training: bool = True) -> float:
  """Analytic FLOPs per token of a training step (or of a forward pass with training=False)."""
  fwd = 2.0 * matmul_params(cfg) + attention_flops_per_token(cfg, seq_len)
  return 3.0 * fwd if training else fwd


def flops_per_token_6n(cfg: ModelConfig) -> float:
  """docs/reference.md §5 convention: 6 N with N = all parameters, embeddings included."""
  return 6.0 * cfg.num_params(embeddings=True)


# Dense peak FLOP/s per chip for bf16 matmuls (vendor data sheets, no sparsity).
PEAK_BF16 = (
    ("h200", 989e12), ("h100 pcie", 756e12), ("h100", 989e12), ("a100", 312e12),
    ("tpu v6 lite", 918e12), ("tpu v6e", 918e12), ("tpu v5 lite", 197e12), ("tpu v5e", 197e12),
    ("tpu v5p", 459e12), ("tpu v5", 459e12), ("tpu v4", 275e12),
)


def peak_flops(device_kind: str, dtype: str = "bfloat16") -> float | None:
  """Peak FLOP/s of one device of this kind for `dtype` matmuls, or None when not known for sure."""
  if dtype not in ("bfloat16", "float16"):
    return None  # fp32 / tf32 peaks depend on precision flags; better "unknown" than a wrong number
  kind = device_kind.lower()
  for key, value in PEAK_BF16:
    if key in kind:
      return value
  return None


def measure_matmul_flops(n: int = 2048, dtype: str = "float32", repeats: int = 3) -> float:
  """Measured FLOP/s of an n^3 matmul on the default device (used as the CPU 'peak')."""
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * n ** 3 / best


def device_peak(dtype: str) -> tuple[float | None, str]:
  """(peak FLOP/s per device or None, where it came from) for the default backend."""
  import jax
  dev = jax.devices()[0]
  if dev.platform == "cpu":
    return measure_matmul_flops(dtype="float32"), "measured (cpu f32 matmul)"
  value = peak_flops(dev.device_kind, dtype)
  return value, (f"table ({dev.device_kind}, {dtype})" if value else f"unknown ({dev.device_kind}, {dtype})")
