"""One trainer per workdir: `<workdir>/train.lock` names its holder (host, pid, start time, command).

The file is created with O_CREAT | O_EXCL, so of two trainers started at once exactly one gets it; the other
fails at once with `WorkdirLocked` naming the holder. A lock left by a process that is gone (same host) is taken
over with a warning; a lock held from another host is never taken over (that host's process may be alive).
Nothing here waits for longer than a second.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time

from slm_jax.procs import pid_alive

LOCK_NAME = "train.lock"
_GUARD_STALE_S = 30.0      # a takeover guard older than this was left by a killed process
_UNWRITTEN_STALE_S = 10.0  # an empty lock file older than this: its creator died before writing it


class WorkdirLocked(RuntimeError):
  pass


def describe_holder(holder: dict) -> str:
  started = holder.get("start")
  when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
  return f"host {holder.get('host', '?')} pid {holder.get('pid', '?')} since {when}"


class WorkdirLock:
  """Context manager; `enabled=False` (processes other than 0 of a multi-host run) holds nothing."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
    self.enabled = enabled
    self.held = False
    self.me = {"host": socket.gethostname(), "pid": os.getpid(), "start": time.time(), "argv": sys.argv}

  def _read(self) -> tuple[dict | None, str]:
    """(holder or None when unreadable, raw text); ({}, '') when there is no lock."""
    try:
      with open(self.path) as f:
        text = f.read()
    except FileNotFoundError:
      return {}, ""
    try:
      holder = json.loads(text)
      return (holder if isinstance(holder, dict) else None), text
    except ValueError:
      return None, text

  def _stale(self, holder: dict | None) -> str | None:
    """Why the current lock is stale, or None when its holder may be alive."""
    if holder is None:
      try:
        age = time.time() - os.path.getmtime(self.path)
      except FileNotFoundError:
        return "it is gone"
      return f"it has been unreadable for {age:.0f} s" if age > _UNWRITTEN_STALE_S else None
    if holder.get("host") == self.me["host"] and isinstance(holder.get("pid"), int) and not pid_alive(holder["pid"]):
      return f"process {holder['pid']} is gone"
    return None

  def _remove_if_unchanged(self, text: str) -> None:
    """Removes the lock if it still holds `text`; a guard file serialises concurrent takeovers."""
    guard = self.path + ".takeover"
    try:
      fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        if time.time() - os.path.getmtime(guard) > _GUARD_STALE_S:
          os.unlink(guard)
      except FileNotFoundError:
        pass
      return
    try:
      if self._read()[1] == text:
        os.unlink(self.path)
    except FileNotFoundError:
      pass
    finally:
      os.close(fd)
      os.unlink(guard)

  def acquire(self) -> "WorkdirLock":
    if not self.enabled:
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    deadline = time.time() + 1.0
    while True:
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder, text = self._read()
        why = self._stale(holder)
        if why is not None:
          logging.warning("taking over the stale lock %s (%s): %s", self.path, why,
                          describe_holder(holder) if holder else text[:200])
          self._remove_if_unchanged(text)
        elif holder or time.time() >= deadline:  # a live holder, or a file still unwritten after a second
          who = describe_holder(holder) if holder else "a process that has not written it yet"
          raise WorkdirLocked(
              f"workdir {os.path.dirname(self.path)} is in use by another trainer ({who}; lock file {self.path}). "
              "Stop that run or use another --workdir; delete the lock file only if that process is gone.")
        if time.time() >= deadline:
          raise WorkdirLocked(f"could not take the lock {self.path} within a second (another trainer is starting)")
        time.sleep(0.05)
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(self.me, f)
        f.flush()
        os.fsync(f.fileno())
      self.held = True
      return self

  def release(self) -> None:
    if not self.held:
      return
    self.held = False
    holder, _ = self._read()
    if holder and holder.get("pid") == self.me["pid"] and holder.get("host") == self.me["host"]:
      try:
        os.unlink(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
