"""Growing an embedding (or untied output head) for new vocabulary rows, as transformers'
`resize_token_embeddings(mean_resizing=True)` does (docs/reference.md §2).

New rows ~ N(mean of ALL old rows, 1e-9 * cov(old rows)) computed in fp32 (covariance divided by the row count,
as transformers does); when 1e-9 * cov is not positive definite (Cholesky fails) every new row is the mean.
Rows already in the matrix are kept as they are: for Qwen, ids between the tokenizer length and the matrix size
reuse the existing (unused) rows and only rows past the old matrix are new. Seeded, unlike transformers.
"""
from __future__ import annotations

import numpy as np

EPSILON = 1e-9
_CHUNK = 16384  # rows per fp32 chunk: bounds the extra memory of the mean / covariance pass


def mean_and_cov(old: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """fp32 mean [D] and covariance [D, D] (sum of centred outer products / N) of the rows of `old` [N, D]."""
  n, d = old.shape
  total = np.zeros((d,), np.float64)
  for i in range(0, n, _CHUNK):
    total += old[i:i + _CHUNK].astype(np.float32).sum(0, dtype=np.float64)
  mean = (total / n).astype(np.float32)
  cov = np.zeros((d, d), np.float32)
  for i in range(0, n, _CHUNK):
    c = old[i:i + _CHUNK].astype(np.float32) - mean
    cov += c.T @ c
  return mean, cov / np.float32(n)


def sample_new_rows(old: np.ndarray, num_new: int, seed: int = 0) -> np.ndarray:
  """[num_new, D] float32 rows drawn as transformers' mean resizing draws them."""
  mean, cov = mean_and_cov(old)
  try:
    chol = np.linalg.cholesky((EPSILON * cov).astype(np.float32))
    ok = bool(np.all(np.isfinite(chol)))
  except np.linalg.LinAlgError:
    ok = False
  if not ok:
    return np.broadcast_to(mean, (num_new, mean.shape[0])).copy()
  z = np.random.default_rng(seed).standard_normal((num_new, mean.shape[0]), dtype=np.float32)
  return mean[None, :] + z @ chol.T


def grow_rows(old: np.ndarray, rows: int, padded_rows: int | None = None, seed: int = 0) -> np.ndarray:
  """`old` [N, D] -> [padded_rows, D] in old's dtype: rows [0, N) copied, [N, rows) mean-initialised,
  [rows, padded_rows) zero. One output buffer is allocated; `rows < N` is an error (nothing is dropped)."""
  n, d = old.shape
  padded_rows = rows if padded_rows is None else padded_rows
  if rows < n:
    raise ValueError(f"cannot shrink a [{n}, {d}] matrix to {rows} rows")
  if padded_rows < rows:
    raise ValueError(f"padded_rows {padded_rows} < rows {rows}")
  if rows == n and padded_rows == n:
    return old
  out = np.empty((padded_rows, d), old.dtype)
  out[:n] = old
  if rows > n:
    out[n:rows] = sample_new_rows(old, rows - n, seed).astype(old.dtype)
  out[rows:] = 0
  return out
