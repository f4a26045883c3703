"""Multi-host start-up, called from tools/train.py's main only (never at import).

`auto` initialises jax.distributed when the environment shows several processes (SLURM with more than one
task, a multi-host TPU slice, or an explicit coordinator); one process otherwise.
"""
from __future__ import annotations

import logging
import os

import jax


def _multi_process_env() -> bool:
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return "," in hosts or bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))


def initialize(mode: str = "auto", coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Calls jax.distributed.initialize when asked (on) or when the environment needs it (auto)."""
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"--distributed={mode!r}: use auto, on or off")
  explicit = coordinator_address is not None
  if mode == "off" or (mode == "auto" and not explicit and not _multi_process_env()):
    return False
  kw = {}
  if explicit:
    kw = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
  jax.distributed.initialize(**kw)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True
