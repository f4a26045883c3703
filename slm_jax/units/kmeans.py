"""k-means quantisation (docs/reference.md §1): centroids from `.npy` (or, explicitly trusted, TWIST's joblib pickle),
nearest-centroid assignment in JAX, and a small deterministic k-means fit for the stand-in encoder."""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

_NPY_MAGIC = b"\x93NUMPY"


class PickleRefused(ValueError):
  """A k-means file that is a pickle, loaded without the explicit trust flag."""


def is_npy(path: str) -> bool:
  with open(path, "rb") as f:
    return f.read(6) == _NPY_MAGIC


def load_centroids(path: str, trust_pickle: bool = False) -> np.ndarray:
  """[K, D] float32 centroids from a `.npy` file, or from a joblib-pickled scikit-learn KMeans (TWIST's `.bin`).

  Loading a pickle runs code stored in the file, so it happens only with `trust_pickle=True`
  (`--trust_pickled_kmeans`); convert it once with `convert_to_npy` and use the `.npy` afterwards.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"k-means file {path} does not exist")
  if is_npy(path):
    c = np.load(path, allow_pickle=False)
  else:
    if not trust_pickle:
      raise PickleRefused(
          f"{path} is not a .npy file; it looks like a joblib/pickle k-means (e.g. TWIST's *_km500.bin). Loading "
          "a pickle runs code from the file, so it is refused by default. If you trust the file, pass "
          "--trust_pickled_kmeans, or convert it once: tools/extract_units.py --convert_kmeans="
          f"{path} --kmeans_out=centroids.npy --trust_pickled_kmeans, then use --kmeans=centroids.npy.")
    c = _centroids_from_pickle(path)
  c = np.asarray(c)
  if c.ndim != 2 or c.shape[0] < 1 or not np.issubdtype(c.dtype, np.floating):
    raise ValueError(f"{path}: expected a [K, D] float array of centroids, got {c.dtype} {c.shape}")
  return c.astype(np.float32)


def _centroids_from_pickle(path: str) -> np.ndarray:
  import warnings

  import joblib
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # scikit-learn version warnings for old pickles
    obj = joblib.load(path)
  for attr in ("cluster_centers_", "centroids"):
    if hasattr(obj, attr):
      return np.asarray(getattr(obj, attr))
  if isinstance(obj, np.ndarray):
    return obj
  raise ValueError(f"{path}: unpickled a {type(obj).__name__}, which has no cluster_centers_")


def save_centroids(path: str, centroids: np.ndarray) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.npy"
  np.save(tmp, np.asarray(centroids, np.float32), allow_pickle=False)
  os.replace(tmp, path)


def convert_to_npy(src: str, dst: str, trust_pickle: bool = False) -> np.ndarray:
  """One-time conversion of a (trusted) joblib k-means to a plain `.npy` of centroids."""
  c = load_centroids(src, trust_pickle=trust_pickle)
  save_centroids(dst, c)
  return c


@jax.jit
def assign(features: jax.Array, centroids: jax.Array) -> jax.Array:
  """Nearest centroid (L2) of each feature vector: [..., D] x [K, D] -> [...] int32.

  Same arithmetic as scikit-learn's `KMeans.predict`: argmin_k ||c_k||^2 - 2 <x, c_k> (the ||x||^2 term does not
  change the argmin), first index on ties.
  """
  f = features.astype(jnp.float32)
  c = centroids.astype(jnp.float32)
  scores = jnp.einsum("...d,kd->...k", f, c, precision=jax.lax.Precision.HIGHEST)
  d = jnp.sum(c * c, axis=-1) - 2.0 * scores
  return jnp.argmin(d, axis=-1).astype(jnp.int32)


def fit(features: np.ndarray, k: int, seed: int = 0, iters: int = 30, max_points: int = 200_000) -> np.ndarray:
  """Deterministic k-means (k-means++ seeding, Lloyd iterations in JAX) on at most `max_points` rows."""
  x = np.asarray(features, np.float32)
  if x.ndim != 2 or x.shape[0] < k:
    raise ValueError(f"k-means with k={k} needs at least {k} feature rows, got shape {x.shape}")
  rng = np.random.default_rng(seed)
  if x.shape[0] > max_points:
    x = x[np.sort(rng.choice(x.shape[0], max_points, replace=False))]
  seed_rows = x if x.shape[0] <= 40 * k else x[np.sort(rng.choice(x.shape[0], 40 * k, replace=False))]
  c = _kmeans_pp(seed_rows, k, rng)  # seeding on a subsample (40 rows per centroid); Lloyd uses all rows
  xs = jnp.asarray(x)
  c = jnp.asarray(c)
  for _ in range(iters):
    c = _lloyd_step(xs, c)
  return np.asarray(c)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  """k-means++ seeding (D^2 sampling), distances as ||x||^2 - 2 x.c + ||c||^2 (one mat-vec per centroid)."""
  x64 = x.astype(np.float64)
  xx = np.einsum("nd,nd->n", x64, x64)
  idx = [int(rng.integers(x.shape[0]))]
  d2 = np.maximum(xx - 2 * x64 @ x64[idx[0]] + xx[idx[0]], 0)
  for _ in range(1, k):
    total = d2.sum()
    i = int(np.searchsorted(np.cumsum(d2), rng.random() * total)) if total > 0 else int(rng.integers(len(x)))
    i = min(i, len(x) - 1)
    idx.append(i)
    d2 = np.minimum(d2, np.maximum(xx - 2 * x64 @ x64[i] + xx[i], 0))
  return x[idx].copy()


@functools.partial(jax.jit)
def _lloyd_step(x: jax.Array, c: jax.Array) -> jax.Array:
  labels = assign(x, c)
  k = c.shape[0]
  sums = jax.ops.segment_sum(x, labels, num_segments=k)
  counts = jax.ops.segment_sum(jnp.ones(x.shape[0], jnp.float32), labels, num_segments=k)
  return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], c)  # empty cluster: keep
