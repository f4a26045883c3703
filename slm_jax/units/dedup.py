"""Deduplication (docs/reference.md §1): runs of equal frame units -> (units, durations in frames)."""
from __future__ import annotations

import numpy as np


def dedup(frame_units) -> tuple[np.ndarray, np.ndarray]:
  """[T] frame units -> (units [N], durations [N]) with sum(durations) == T (torch.unique_consecutive)."""
  x = np.asarray(frame_units).reshape(-1)
  if x.size == 0:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  starts = np.flatnonzero(np.concatenate([[True], x[1:] != x[:-1]]))
  durations = np.diff(np.concatenate([starts, [x.size]]))
  return x[starts].astype(np.int64), durations.astype(np.int64)


def expand(units, durations) -> np.ndarray:
  """Inverse of `dedup`."""
  return np.repeat(np.asarray(units, np.int64), np.asarray(durations, np.int64))


def features_record(frame_units, file_name: str) -> dict:
  """A slamkit features JSONL record: {"units": [...], "duration": [...], "file_name": ...}."""
  units, durations = dedup(frame_units)
  return {"units": units.tolist(), "duration": durations.tolist(), "file_name": file_name}
