"""Process helpers shared by the workdir lock (train.lock) and staged outputs (checkpoint.staging)."""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
  """Whether a process `pid` exists on this host (one owned by another user counts as alive)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True
