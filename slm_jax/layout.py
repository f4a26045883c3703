"""Static row layouts shared by the data pipeline and the model (layer 1: numpy only).

`Branches`: shared-prefix rows, one prompt and several continuations of it in one row (DPO's shared-prompt pairs,
`data.preference.shared_pair_row`; attention in `model.transformer`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Branches(NamedTuple):
  """Static layout of shared-prefix rows: [prefix | branch 1 | ... | branch count], `prefix` and `length` positions
  each. A branch's tokens attend to the prefix and to their own branch only, so one row holds a prompt once and
  several continuations of it (DPO's chosen and rejected, `data.preference.shared_pair_row`); padding inside a
  region has segment id 0."""
  prefix: int
  length: int
  count: int = 2

  @property
  def total(self) -> int:
    return self.prefix + self.count * self.length

  def ids(self) -> np.ndarray:
    """[total] region of each position: 0 in the prefix, k in branch k."""
    return np.concatenate([np.zeros(self.prefix, np.int32)]
                          + [np.full(self.length, k + 1, np.int32) for k in range(self.count)])

  def visible(self) -> np.ndarray:
    """[total, total] bool: key region visible from query region (prefix, or the query's own branch)."""
    b = self.ids()
    return (b[None, :] == 0) | (b[None, :] == b[:, None])

  def key_blocks(self, block: int) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Query blocks (start, end, key ranges): each region in equal blocks of at most `block` queries, each block
    against the prefix and its own region up to the block's end; the keys a block cannot see by causality or by
    branch are never computed."""
    out = []
    for r in range(self.count + 1):
      start = 0 if r == 0 else self.prefix + (r - 1) * self.length
      end = self.prefix if r == 0 else start + self.length
      n = -(-(end - start) // block)
      bounds = [start + (end - start) * j // n for j in range(n + 1)]
      for i, e in zip(bounds[:-1], bounds[1:]):
        ranges = [(0, e)] if start <= self.prefix else [(0, self.prefix), (start, e)]
        out.append((i, e, [(a, b) for a, b in ranges if b > a]))
    return out
