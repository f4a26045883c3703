"""Host allocator tuning (`slm_jax.hostmem`): after `tune_allocator`, a large block freed and allocated again is
served from memory already mapped (no new page faults), where glibc's defaults map fresh pages each time."""
import subprocess
import sys
import textwrap

import pytest

_PROBE = textwrap.dedent("""
  import ctypes, resource, sys
  from slm_jax import hostmem
  applied = hostmem.tune_allocator() if sys.argv[1] == "tuned" else False
  libc = ctypes.CDLL("libc.so.6")
  libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
  libc.free.argtypes = [ctypes.c_void_p]
  n = 64 << 20
  def touch():
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
  touch()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(5):
    touch()
  print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> tuple[str, int]:
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
  applied, faults = out.stdout.split()
  return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_allocator_reuses_freed_blocks():
  applied, tuned = _faults("tuned")
  assert applied == "True"
  _, default = _faults("default")
  pages = 5 * (64 << 20) // 4096
  assert default > pages // 2, default  # glibc maps a fresh 64 MiB block (and faults it in) on every malloc
  assert tuned < pages // 50, tuned     # tuned: the freed block is reused, already resident


def test_opt_out(monkeypatch):
  from slm_jax import hostmem
  monkeypatch.setattr(hostmem, "_applied", False)
  monkeypatch.setenv("SLM_JAX_MALLOC", "default")
  assert hostmem.tune_allocator() is False
