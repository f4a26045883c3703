"""Checks that the fused cuDNN attention path gives the XLA path's logits (GPU only; prints max |diff|).

  PYTHONPATH=. python3 tools/bench/check_attention_paths.py
Covers a causal-only batch and a packed batch with segment ids, in bf16 compute (cuDNN has no fp32 kernel).
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from slm_jax.model import create_model, preset
from slm_jax.sharding import make_mesh


def main():
  if jax.default_backend() != "gpu":
    print("check_attention_paths: needs a GPU (cuDNN); backend is", jax.default_backend())
    return 0
  worst = 0.0
  for dtype in ("bfloat16",):
    cfg = preset("tiny-llama", hidden_size=512, intermediate_size=1024, num_attention_heads=8,
                 num_key_value_heads=2, head_dim=64, dtype=dtype, param_dtype="float32")
    mesh = make_mesh(devices=jax.devices()[:1])
    xla = create_model(cfg, mesh, seed=0)
    fused = create_model(cfg.replace(attention_impl="cudnn"), mesh, seed=0)
    rng = np.random.RandomState(0)
    ids = jnp.asarray(rng.randint(0, 1000, (4, 256)))
    seg = jnp.asarray(np.repeat([[1] * 100 + [2] * 156], 4, 0))
    pos = jnp.asarray(np.repeat([list(range(100)) + list(range(156))], 4, 0))
    for name, args in (("causal", (ids,)), ("packed", (ids, pos, seg))):
      a = np.asarray(jax.jit(lambda *x: xla.logits(xla(*x)))(*args), np.float32)
      b = np.asarray(jax.jit(lambda *x: fused.logits(fused(*x)))(*args), np.float32)
      rel = float(np.abs(a - b).max() / np.abs(a).max())
      worst = max(worst, rel)
      print(f"attention cudnn vs xla [{dtype} {name}]: max|diff|/max|ref| = {rel:.2e}")
  ok = worst < 2e-2  # bf16 compute: two different reduction orders
  print("attention paths agree" if ok else "attention paths DISAGREE")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
