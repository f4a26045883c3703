"""XLA_FLAGS for the tools the tests start: simulated CPU devices plus what conftest.py gives the tests themselves
(LLVM at -O0: the same HLO and float semantics, less compile time)."""
FAST_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(devices: int | None = None) -> str:
  """`devices` simulated CPU devices (None: the platform's one)."""
  return FAST_COMPILE if devices is None else f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"
