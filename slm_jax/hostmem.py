"""Host allocator settings for XLA:CPU (what `console.setup` applies in every tool).

XLA:CPU allocates each step's buffers with malloc. glibc serves large blocks with fresh mmaps (and per-thread
arenas with their own mapped heaps) and gives them back on free, so every step pays a page fault for every 4 KiB
page it touches: on this project's 2-core VM, adding 1 to a 33 MB array took 16-24 ms instead of 4 ms, and the
DPO step of tools/bench_dpo.py ran about 20% slower. Keeping freed memory in one heap (one arena, no mmap for large
blocks, no trimming) removes those faults; the process's resident memory then stays at its peak, as with the
tcmalloc preload that MaxText's images use. Only glibc on Linux; SLM_JAX_MALLOC=default leaves malloc alone.

Measured (2 cores, the same commands alternating): `tools/train.py --config=configs/demo.py
--config.total_steps=30` 193 s -> 150 s (338-418 -> 535-554 tokens/s, identical losses). Compilation, which
allocates from many threads, gets slower with one arena (tests/test_dpo.py 52 s -> 56-59 s), so the test suite,
which is mostly compilation, does not call this.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_applied = False


def tune_allocator() -> bool:
  """Keep freed host memory for reuse (see the module doc). Returns whether the settings were applied; idempotent.
  Call before the large allocations (at tool start): blocks mapped earlier are not affected."""
  global _applied
  if _applied:
    return True
  if os.environ.get("SLM_JAX_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # not glibc (musl has no mallopt)
    return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  ok = all(mallopt(param, value) == 1 for param, value in
           ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)))
  _applied = ok
  return ok
