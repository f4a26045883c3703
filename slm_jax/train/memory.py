"""Per-device bytes of compiled programs and of abstract (sharded) pytrees, for the AOT memory report."""
from __future__ import annotations

import math

import jax
import numpy as np


def program_bytes(ma) -> int:
  """Per-device bytes of one compiled program (`compiled.memory_analysis()`): arguments, temporaries, outputs not
  aliased to donated inputs, code."""
  return (ma.argument_size_in_bytes + ma.temp_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
          + ma.generated_code_size_in_bytes)


def state_bytes(tree) -> int:
  """Global bytes of an abstract pytree."""
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def device_bytes(tree) -> int:
  """Bytes of an abstract pytree (leaves carrying shardings) held by its most loaded device."""
  per = {}
  for x in jax.tree.leaves(tree):
    n = math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
    for d in x.sharding.device_set:
      per[d] = per.get(d, 0) + n
  return max(per.values(), default=0)
