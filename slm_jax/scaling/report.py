"""Everything `tools/fit_scaling.py` reports: the law, its bootstrap intervals, the compute-optimal allocation, the
metric power laws on the frontier and the textless law of docs/reference.md §7, as one JSON-able dict (fit.json)."""
from __future__ import annotations

import json
import os

import numpy as np

from slm_jax.scaling import fit
from slm_jax.scaling.table import MIN_DISTINCT, Runs, check_fittable, lower_is_better

SIMS_BUDGETS = (2e20, 6.86e20)  # docs/reference.md §7: the 2e20 comparison and SIMS-7B's compute


def default_budgets(runs: Runs) -> list[float]:
  lo, hi = float(runs.flops.min()), float(runs.flops.max())
  return sorted({lo, float(np.sqrt(lo * hi)), hi, *SIMS_BUDGETS})


def bootstrap_laws(runs: Runs, num: int, seed: int = 0, starts=None, log=print) -> list[fit.Law]:
  """Laws fitted to `num` resamples (with replacement) of the runs, each from `starts` (default: the full grid);
  resamples spanning too few sizes or token counts are drawn again."""
  rng = np.random.default_rng(seed)
  laws, redrawn = [], 0
  while len(laws) < num:
    i = rng.integers(0, len(runs), len(runs))
    if len(np.unique(runs.params[i])) < MIN_DISTINCT or len(np.unique(runs.tokens[i])) < MIN_DISTINCT:
      redrawn += 1
      if redrawn > 100 * num:
        raise ValueError(f"{runs.path}: bootstrap resamples almost never span {MIN_DISTINCT} sizes and token "
                         "counts; add runs")
      continue
    laws.append(fit.fit_law(runs.params[i], runs.tokens[i], runs.loss[i], grid=starts, polish=1).law)
    if log and (len(laws) % 20 == 0 or len(laws) == num):
      log(f"bootstrap {len(laws)}/{num}")
  return laws


def metric_trends(runs: Runs) -> dict:
  """Power law metric = k * C^gamma on each metric's frontier (best run per compute)."""
  out = {}
  for name, values in {"loss": runs.loss, **runs.metrics}.items():
    ok = np.isfinite(values) & (values > 0)
    entry = {"lower_is_better": lower_is_better(name), "num_runs": int(ok.sum())}
    idx = np.flatnonzero(ok)
    front = idx[fit.pareto_frontier(runs.flops[idx], values[idx], not entry["lower_is_better"])]
    entry["frontier"] = [runs.names[i] for i in front]
    try:
      k, gamma = fit.fit_power_law(runs.flops[front], values[front])
      entry.update(coef=k, exponent=gamma)
    except ValueError as e:
      entry["skipped"] = str(e)
    ref = next((v for key, v in fit.TEXTLESS_METRIC_EXPONENTS.items() if name.lower().startswith(key)), None)
    if ref is not None:
      entry["textless_exponent"] = ref
    out[name] = entry
  return out


def _law_entry(law: fit.Law, budgets) -> dict:
  d = law.to_dict()
  d.update(n_opt_exponent=law.n_opt_exponent, d_opt_exponent=law.d_opt_exponent, G=law.G)
  d["compute_optimal"] = [{"flops": c, "N_opt": float(n), "D_opt": float(t), "loss": float(law.loss(n, t))}
                          for c, (n, t) in ((c, law.compute_optimal(c)) for c in budgets)]
  return d


def analyze(runs: Runs, budgets=None, bootstrap: int = 100, seed: int = 0, confidence: float = 0.95,
            grid=None, bootstrap_full_grid: bool = False, log=print) -> tuple[dict, fit.FitResult, list[fit.Law]]:
  """(fit.json dict, the best fit, the bootstrap laws). Bootstrap refits start from the distinct minima the full
  fit found (warm starts, ~50x cheaper) unless `bootstrap_full_grid`."""
  check_fittable(runs)
  budgets = sorted(budgets) if budgets else default_budgets(runs)
  best = fit.fit_law(runs.params, runs.tokens, runs.loss, grid=grid)
  starts = None if bootstrap_full_grid else best.distinct_minima()
  if bootstrap_full_grid and grid is not None:
    starts = grid if isinstance(grid, np.ndarray) else fit.initial_grid(grid)
  laws = bootstrap_laws(runs, bootstrap, seed, starts, log) if bootstrap else []
  out = _law_entry(best.law, budgets)
  out["intervals"] = fit.law_intervals(laws, confidence) if laws else {}
  for entry in out["compute_optimal"]:
    if laws:
      entry["N_opt_interval"], entry["D_opt_interval"] = fit.allocation_intervals(laws, entry["flops"], confidence)
  pred = best.law.loss(runs.params, runs.tokens)
  out["fit"] = {"objective": best.objective, "huber_delta": fit.HUBER_DELTA, "num_starts": best.num_starts,
                "num_runs": len(runs), "rmse_log_loss": float(np.sqrt(np.mean((np.log(pred / runs.loss)) ** 2))),
                "bootstrap_samples": len(laws), "confidence": confidence, "seed": seed,
                "bootstrap_starts": "full grid" if bootstrap_full_grid else "distinct minima of the full fit"}
  out["compute"] = "flops column" if runs.flops_from_csv else "6 * params * tokens"
  out["runs_csv"] = os.path.abspath(runs.path)
  out["metrics"] = metric_trends(runs)
  out["textless"] = _law_entry(fit.TEXTLESS, budgets)
  out["textless"]["source"] = "Cuervo & Marxer 2024 (docs/reference.md §7); losses are on another vocabulary"
  return out, best, laws


def _finite(x):
  """Non-finite floats (a degenerate bootstrap bound) become null: strict JSON has no Infinity / NaN."""
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  if isinstance(x, (float, np.floating)):
    return float(x) if np.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  return x


def write_json(path: str, d: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(_finite(d), f, indent=2, allow_nan=False)
    f.write("\n")
