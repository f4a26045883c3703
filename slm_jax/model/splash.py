"""TPU attention: Pallas splash attention (causal, packed rows kept apart by segment ids), sharded over the mesh.

The kernel works on one row [heads, T, H]; it is vmapped over the rows a device holds and run under shard_map
with rows split like the batch and heads like the `tensor` axis (when it divides both query and kv heads). On a
non-TPU target it runs in Pallas interpret mode (numerical tests on CPU). On TPU, bf16 operands need the default
matmul precision (Mosaic has no fp32-precision matmul of bf16 inputs): not `jax_default_matmul_precision=highest`.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
from jax.sharding import PartitionSpec as P

from slm_jax.sharding import logical_to_spec

BLOCK = 512  # largest query/kv tile; the row length must be a multiple of a 128-multiple tile


def target_platform() -> str:
  """Platform of the devices being compiled for: the mesh set by `jax.set_mesh` (an AOT topology), else the
  default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh is None or mesh.empty else getattr(mesh, "abstract_device", None)
  return device.platform if device is not None else jax.default_backend()


def _block(T: int) -> int:
  b = math.gcd(T, BLOCK)
  if b % 128:
    raise ValueError(f"attention_impl='splash' needs a sequence length that is a multiple of 128, got {T}")
  return b


@functools.lru_cache(maxsize=16)
def _kernel(num_heads: int, T: int, interpret: bool):
  b = _block(T)
  sizes = sk.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b,
                        block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)
  mask = sm.MultiHeadMask([sm.CausalMask((T, T)) for _ in range(num_heads)])
  return sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _local(q, k, v, seg, interpret: bool):
  """q [b, T, N, H], k/v [b, T, K, H], seg [b, T] int32 (this device's rows and heads)."""
  kernel = _kernel(q.shape[2], q.shape[1], interpret)
  scale = 1.0 / math.sqrt(q.shape[-1])
  qt, kt, vt = ((x.swapaxes(1, 2)) for x in ((q * scale).astype(q.dtype), k, v))  # [b, heads, T, H]
  one = lambda qq, kk, vv, s: kernel(qq, kk, vv, segment_ids=sk.SegmentIds(q=s, kv=s))
  return jax.vmap(one)(qt, kt, vt, seg).swapaxes(1, 2)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
  """Causal attention within segments: q [B,T,N,H], k/v [B,T,K,H], segment_ids [B,T] (None: one document)."""
  B, T = q.shape[:2]
  seg = jnp.ones((B, T), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
  interpret = target_platform() != "tpu"
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty or mesh.size == 1:
    return _local(q, k, v, seg, interpret)
  rows = logical_to_spec(("batch",), (B,), mesh)[0]
  heads = logical_to_spec(("act_heads",), (math.gcd(q.shape[2], k.shape[2]),), mesh)[0]
  qkv = P(rows, None, heads, None)
  fn = jax.shard_map(functools.partial(_local, interpret=interpret), mesh=mesh,
                     in_specs=(qkv, qkv, qkv, P(rows, None)), out_specs=qkv, check_vma=False)
  return fn(q, k, v, seg)

