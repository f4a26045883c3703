"""Chinchilla-style scaling-law fits (docs/reference.md §8): L(N, D) = E + A / N^alpha + B / D^beta.

Hoffmann et al. 2022 approach 3 as re-done by Besiroglu et al. 2024: minimise the sum over runs of
Huber_delta(LSE(a - alpha log N, b - beta log D, e) - log L) with delta = 1e-3, A = e^a, B = e^b, E = e^e;
L-BFGS from every point of a grid of initial values, keep the best. Here the grid is optimised all at once by a
vectorised L-BFGS (numpy), and the best few are polished by scipy's L-BFGS-B at tight tolerances (the loose
default tolerances were the flaw Besiroglu et al. found). Confidence intervals: bootstrap over runs.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import scipy.optimize

# theta = (a, b, e, alpha, beta)
PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
DEFAULT_GRID = {"alpha": np.arange(0.0, 2.01, 0.5), "beta": np.arange(0.0, 2.01, 0.5),
                "e": np.arange(-1.0, 1.01, 0.5), "a": np.arange(0.0, 25.1, 5.0), "b": np.arange(0.0, 25.1, 5.0)}
HUBER_DELTA = 1e-3


@dataclasses.dataclass(frozen=True)
class Law:
  """L(N, D) = E + A / N^alpha + B / D^beta, with the compute-optimal allocation under C = 6ND."""
  E: float
  A: float
  B: float
  alpha: float
  beta: float

  def loss(self, n, d):
    n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
    return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

  @property
  def n_opt_exponent(self) -> float:
    """a in N_opt ~ C^a."""
    return self.beta / (self.alpha + self.beta)

  @property
  def d_opt_exponent(self) -> float:
    """b in D_opt ~ C^b."""
    return self.alpha / (self.alpha + self.beta)

  @property
  def G(self) -> float:  # pylint: disable=invalid-name
    return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

  def compute_optimal(self, flops):
    """(N_opt, D_opt) minimising L under 6 N D = flops (docs/reference.md §8)."""
    c6 = np.asarray(flops, np.float64) / 6.0
    return self.G * c6 ** self.n_opt_exponent, c6 ** self.d_opt_exponent / self.G

  def optimal_loss(self, flops):
    n, d = self.compute_optimal(flops)
    return self.loss(n, d)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_theta(cls, theta) -> "Law":
    a, b, e, alpha, beta = (float(x) for x in theta)
    with np.errstate(over="ignore"):  # a degenerate bootstrap refit may send a or b off to huge values
      return cls(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta)


# Textless SLMs, Cuervo & Marxer 2024 (docs/reference.md §7), and their metric-vs-compute exponents.
TEXTLESS = Law(E=1.73, A=13.9, B=39.8, alpha=0.25, beta=0.24)
TEXTLESS_METRIC_EXPONENTS = {"sblimp": 0.021, "tsc": 0.025, "ssc": 0.017}


def initial_grid(grid: dict | None = None) -> np.ndarray:
  """[K, 5] starting points (a, b, e, alpha, beta): the Cartesian product of the grid's values."""
  grid = {**DEFAULT_GRID, **(grid or {})}
  return np.array(list(itertools.product(*(np.atleast_1d(grid[k]) for k in PARAM_NAMES))), np.float64)


def objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
              delta: float = HUBER_DELTA) -> tuple[np.ndarray, np.ndarray]:
  """Huber objective and its gradient for a batch of parameter vectors: theta [K, 5] -> f [K], grad [K, 5]."""
  theta = np.atleast_2d(theta)
  a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(5))
  u = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(theta), len(log_n)))])  # [3,K,M]
  m = u.max(axis=0)
  w = np.exp(u - m)
  z = w.sum(axis=0)
  r = m + np.log(z) - log_l  # [K, M]
  s = w / z  # softmax weights, d LSE / d u
  small = np.abs(r) <= delta
  f = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum(axis=1)
  h = np.where(small, r, delta * np.sign(r))  # d huber / d r
  g = np.stack([(h * s[0]).sum(1), (h * s[1]).sum(1), (h * s[2]).sum(1),
                -(h * s[0] * log_n).sum(1), -(h * s[1] * log_d).sum(1)], axis=1)
  return f, g


def lbfgs_batched(fg, x0: np.ndarray, max_iter: int = 300, history: int = 10, gtol: float = 1e-12,
                  ftol: float = 1e-10, max_step: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
  """L-BFGS with backtracking (Armijo) line search on K independent problems at once: x0 [K, P] -> (x, f).

  `fg(x [k, P]) -> (f [k], g [k, P])` must treat rows independently. A row stops when its gradient's max-norm is
  below gtol, its relative decrease below ftol, or its line search fails.
  """
  with np.errstate(all="ignore"):  # wild starting points overflow; their rows are simply never accepted
    return _lbfgs_batched(fg, x0, max_iter, history, gtol, ftol, max_step)


def _lbfgs_batched(fg, x0, max_iter, history, gtol, ftol, max_step):
  x = np.array(x0, np.float64)
  k, p = x.shape
  f, g = fg(x)
  s_hist, y_hist, rho = np.zeros((history, k, p)), np.zeros((history, k, p)), np.zeros((history, k))
  active = np.isfinite(f) & (np.abs(g).max(1) > gtol)
  newest = -1
  for _ in range(max_iter):
    if not active.any():
      break
    idx = np.flatnonzero(active)
    # Two-loop recursion over the history ring, newest first (unused or rejected slots have rho = 0).
    q = g[idx].copy()
    order = [(newest - j) % history for j in range(history)]
    alphas = np.zeros((history, len(idx)))
    for j in order:
      alphas[j] = rho[j, idx] * np.einsum("kp,kp->k", s_hist[j, idx], q)
      q -= alphas[j][:, None] * y_hist[j, idx]
    sy = np.einsum("kp,kp->k", s_hist[newest, idx], y_hist[newest, idx]) if newest >= 0 else np.zeros(len(idx))
    yy = np.einsum("kp,kp->k", y_hist[newest, idx], y_hist[newest, idx]) if newest >= 0 else np.zeros(len(idx))
    have = rho[newest, idx] > 0 if newest >= 0 else np.zeros(len(idx), bool)
    gnorm = np.linalg.norm(g[idx], axis=1)
    gamma = np.where(have, sy / np.where(have, yy, 1.0), 1.0 / np.maximum(gnorm, 1e-300))
    r = gamma[:, None] * q
    for j in reversed(order):
      beta = rho[j, idx] * np.einsum("kp,kp->k", y_hist[j, idx], r)
      r += (alphas[j] - beta)[:, None] * s_hist[j, idx]
    d = -r
    gd = np.einsum("kp,kp->k", g[idx], d)
    bad = ~(gd < 0) | ~np.isfinite(gd)  # not a descent direction: fall back to steepest descent
    d[bad] = -g[idx][bad] / np.maximum(gnorm[bad], 1e-300)[:, None]
    gd[bad] = -gnorm[bad]
    # Backtracking line search.
    dnorm = np.linalg.norm(d, axis=1)
    t = np.minimum(1.0, max_step / np.maximum(dnorm, 1e-300))
    x_new, f_new, g_new = x[idx].copy(), f[idx].copy(), g[idx].copy()
    todo = np.ones(len(idx), bool)
    trying = todo.copy()
    dmax = np.abs(d).max(1) / np.maximum(np.abs(x[idx]).max(1), 1.0)
    for _ in range(50):
      j = np.flatnonzero(trying)
      if not len(j):
        break
      xt = x[idx[j]] + t[j, None] * d[j]
      ft, gt = fg(xt)
      ok = np.isfinite(ft) & (ft <= f[idx[j]] + 1e-4 * t[j] * gd[j])
      x_new[j[ok]], f_new[j[ok]], g_new[j[ok]] = xt[ok], ft[ok], gt[ok]
      todo[j[ok]] = trying[j[ok]] = False
      # Quadratic interpolation of f along d, kept within [0.1, 0.5] of the failed step.
      tj, fj = t[j[~ok]], ft[~ok]
      curv = fj - f[idx[j[~ok]]] - gd[j[~ok]] * tj
      tq = np.where(np.isfinite(curv) & (curv > 0), -gd[j[~ok]] * tj * tj / (2 * np.where(curv > 0, curv, 1.0)),
                    0.1 * tj)
      t[j[~ok]] = np.clip(tq, 0.1 * tj, 0.5 * tj)
      trying[j[~ok]] = t[j[~ok]] * dmax[j[~ok]] > 1e-15  # give up once the step is below rounding
    moved = ~todo
    newest = (newest + 1) % history
    s, y = x_new - x[idx], g_new - g[idx]
    sy = np.einsum("kp,kp->k", s, y)
    keep = moved & (sy > 1e-300)
    s_hist[newest, idx], y_hist[newest, idx] = s, y
    rho[newest, idx] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)
    decrease = f[idx] - f_new
    x[idx], f[idx], g[idx] = x_new, f_new, g_new
    done = todo | (np.abs(g_new).max(1) <= gtol) | (decrease <= ftol * np.maximum(np.abs(f_new), 1e-300))
    active[idx[done]] = False
  return x, f


@dataclasses.dataclass
class FitResult:
  law: Law
  theta: np.ndarray
  objective: float
  num_starts: int
  ends: np.ndarray        # [K, 5] where each start's L-BFGS ended
  end_objective: np.ndarray  # [K]

  def distinct_minima(self, k: int = 64, decimals: int = 3) -> np.ndarray:
    """Up to k distinct end points (rounded to `decimals`), best first, the polished optimum included: warm
    starts for bootstrap refits, which move each local minimum only slightly."""
    order = np.argsort(self.end_objective)
    seen, out = set(), [self.theta]
    for i in order:
      if not np.isfinite(self.end_objective[i]) or len(out) >= k:
        break
      key = tuple(np.round(self.ends[i], decimals))
      if key not in seen:
        seen.add(key)
        out.append(self.ends[i])
    return np.array(out)


def _check_arrays(n, d, l):
  n, d, l = (np.asarray(v, np.float64).ravel() for v in (n, d, l))
  if not len(n) == len(d) == len(l):
    raise ValueError(f"params, tokens, loss have different lengths {len(n)}, {len(d)}, {len(l)}")
  for name, v in (("params", n), ("tokens", d), ("loss", l)):
    if not (np.isfinite(v).all() and (v > 0).all()):
      raise ValueError(f"{name} must be finite and positive; got {v[~(np.isfinite(v) & (v > 0))][:5]}")
  return n, d, l


def fit_law(n, d, l, delta: float = HUBER_DELTA, grid: dict | np.ndarray | None = None, polish: int = 5,
            max_iter: int = 300) -> FitResult:
  """The docs/reference.md §8 fit of losses `l` of runs with `n` parameters trained on `d` tokens."""
  n, d, l = _check_arrays(n, d, l)
  log_n, log_d, log_l = np.log(n), np.log(d), np.log(l)
  starts = grid if isinstance(grid, np.ndarray) else initial_grid(grid)
  fg = lambda th: objective(th, log_n, log_d, log_l, delta)  # noqa: E731
  x, f = lbfgs_batched(fg, starts, max_iter=max_iter)
  f = np.where(np.isfinite(f), f, np.inf)
  best_x, best_f = x[np.argmin(f)], float(f.min())
  for i in np.argsort(f)[:polish]:
    with np.errstate(all="ignore"):
        res = scipy.optimize.minimize(lambda th: tuple(v[0] for v in fg(th[None])), x[i], jac=True,
                                    method="L-BFGS-B",
                                    options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-14, "maxcor": 20})
    if np.isfinite(res.fun) and res.fun < best_f:
      best_x, best_f = res.x, float(res.fun)
  return FitResult(Law.from_theta(best_x), np.asarray(best_x), best_f, len(starts), x, f)


def percentile_interval(samples: np.ndarray, confidence: float) -> list[float]:
  lo = 100 * (1 - confidence) / 2
  return [float(v) for v in np.nanpercentile(samples, [lo, 100 - lo])]


def law_intervals(laws: list[Law], confidence: float = 0.95) -> dict:
  """Percentile intervals of the laws' parameters and allocation exponents."""
  with np.errstate(all="ignore"):
    return {k: percentile_interval(np.array([getattr(law, k) for law in laws]), confidence)
            for k in ("E", "A", "B", "alpha", "beta", "n_opt_exponent", "d_opt_exponent")}


def allocation_intervals(laws: list[Law], flops: float, confidence: float = 0.95) -> tuple[list, list]:
  """Percentile intervals of N_opt and D_opt at `flops` over the laws."""
  with np.errstate(all="ignore"):
    nd = np.array([law.compute_optimal(flops) for law in laws], np.float64)
  return percentile_interval(nd[:, 0], confidence), percentile_interval(nd[:, 1], confidence)


def pareto_frontier(compute, metric, higher_is_better: bool = True) -> np.ndarray:
  """Indices of runs no cheaper-or-equal run beats: the best run per compute budget, in increasing compute."""
  compute, metric = np.asarray(compute, np.float64), np.asarray(metric, np.float64)
  sign = 1.0 if higher_is_better else -1.0
  order = np.lexsort((-sign * metric, compute))  # by compute, best first among equal compute
  keep, best = [], -np.inf
  for i in order:
    if sign * metric[i] > best:
      keep.append(i)
      best = sign * metric[i]
  return np.array(keep, np.int64)


def fit_power_law(x, y) -> tuple[float, float]:
  """(k, gamma) of y = k * x^gamma by least squares in log-log space."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if len(x) < 2 or np.ptp(np.log(x)) == 0:
    raise ValueError(f"a power law needs at least 2 points with different x; got {len(x)}")
  if not ((x > 0).all() and (y > 0).all()):
    raise ValueError("a power law needs positive x and y")
  gamma, logk = np.polyfit(np.log(x), np.log(y), 1)
  return float(np.exp(logk)), float(gamma)
