"""Outputs written into a temporary sibling folder and renamed into place only when complete."""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket

from slm_jax.procs import pid_alive


class OutputExists(FileExistsError):
  pass


def check_output(out_dir: str, overwrite: bool = False) -> str:
  """Fails early (before any heavy work) when `out_dir` exists and may not be replaced."""
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not overwrite:
    raise OutputExists(f"output folder {out_dir} already exists (pass --overwrite to replace it)")
  return out_dir


def remove_leftovers(out_dir: str) -> list[str]:
  """Removes `<out_dir>.tmp-<host>-<pid>` folders of killed runs on this host (their process is gone)."""
  removed = []
  for tmp in glob.glob(glob.escape(out_dir) + ".tmp-*"):
    host, _, pid = tmp[len(out_dir) + len(".tmp-"):].rpartition("-")
    if host not in ("", socket.gethostname()) or not pid.isdigit() or pid_alive(int(pid)):
      continue
    shutil.rmtree(tmp, ignore_errors=True)
    logging.warning("removed %s, left by an unfinished run", tmp)
    removed.append(tmp)
  return removed


@contextlib.contextmanager
def staged_output(out_dir: str, overwrite: bool = False):
  """Yields a fresh temporary folder next to `out_dir`; on success it replaces `out_dir`, on error it is removed."""
  out_dir = check_output(out_dir, overwrite)
  os.makedirs(os.path.dirname(out_dir), exist_ok=True)
  remove_leftovers(out_dir)
  tmp = f"{out_dir}.tmp-{socket.gethostname()}-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.rename(tmp, out_dir)
