"""Unit timing (docs/reference.md §1): the mHuBERT-25Hz frame length and the end time of each deduplicated unit."""
from __future__ import annotations

import numpy as np

FRAME_S = 640 / 16000  # seconds per mHuBERT-25Hz frame, as slamkit's get_unit_duration()


def unit_end_times(durations, frame_s: float = FRAME_S) -> np.ndarray:
  """End time in seconds of each deduplicated unit: cumsum(durations) * frame_s (float64, as slamkit)."""
  return np.cumsum(np.asarray(durations, np.int64)) * frame_s
