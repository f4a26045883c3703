"""PNG plots of a scaling study (matplotlib, Agg backend): loss and isoFLOP curves, the compute-optimal frontier
against the textless law of docs/reference.md §7, and metrics against compute."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402

from slm_jax.scaling import fit  # noqa: E402
from slm_jax.scaling.table import Runs  # noqa: E402


def _compute_range(runs: Runs, extra=()):
  values = np.concatenate([runs.flops, np.asarray(extra, np.float64)])
  lo, hi = values.min(), values.max()
  return np.logspace(np.log10(lo) - 0.3, np.log10(hi) + 0.3, 200)


def _fmt(n: float) -> str:
  for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= scale:
      return f"{n / scale:.3g}{unit}"
  return f"{n:.3g}"


def loss_vs_compute(runs: Runs, law: fit.Law, path: str) -> None:
  """Left: runs and the fitted L(N, C / 6N) of each model size, with the compute-optimal envelope.
  Right: isoFLOP curves L(N, C / 6N) against N, minimum at N_opt."""
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
  sizes = np.unique(runs.params)
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
  c = _compute_range(runs)
  for n, col in zip(sizes, colors):
    sel = runs.params == n
    ax.scatter(runs.flops[sel], runs.loss[sel], color=col, zorder=3, label=f"N={_fmt(n)}")
    ax.plot(c, law.loss(n, c / (6 * n)), color=col, lw=1)
  ax.plot(c, law.optimal_loss(c), "k--", lw=1.5, label="compute-optimal L*(C)")
  ax.set(xscale="log", yscale="log", xlabel="compute C = 6ND (FLOPs)", ylabel="validation loss",
         title=f"L = {law.E:.3g} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}")
  ax.set_ylim(runs.loss.min() / 1.5, runs.loss.max() * 1.5)  # steep fitted curves would hide the data
  ax.legend(fontsize=8)
  budgets = np.logspace(np.log10(runs.flops.min()), np.log10(runs.flops.max()), 5)
  n_grid = np.logspace(np.log10(sizes.min()) - 1, np.log10(sizes.max()) + 1, 200)
  for cb, col in zip(budgets, plt.cm.plasma(np.linspace(0, 0.85, len(budgets)))):
    ax2.plot(n_grid, law.loss(n_grid, cb / (6 * n_grid)), color=col, label=f"C={cb:.2g}")
    n_opt, d_opt = law.compute_optimal(cb)
    ax2.scatter([n_opt], [law.loss(n_opt, d_opt)], color=col, marker="*", s=80, zorder=3)
  ax2.set_ylim(law.optimal_loss(budgets).min() / 1.5, law.optimal_loss(budgets).max() * 3)
  ax2.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="fitted loss", title="isoFLOP curves (* = N_opt)")
  ax2.legend(fontsize=8)
  _save(fig, path)


def frontier_vs_textless(runs: Runs, law: fit.Law, laws: list[fit.Law], path: str,
                         textless: fit.Law = fit.TEXTLESS) -> None:
  """Left: compute-optimal loss of the fit and of the textless law (different vocabularies: compare shapes).
  Right: N_opt(C) and D_opt(C), with the bootstrap band, against the textless allocation."""
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
  c = _compute_range(runs, extra=(6.86e20,))
  front = fit.pareto_frontier(runs.flops, runs.loss, higher_is_better=False)
  ax.scatter(runs.flops, runs.loss, color="0.7", label="runs")
  ax.scatter(runs.flops[front], runs.loss[front], color="C0", zorder=3, label="frontier")
  ax.plot(c, law.optimal_loss(c), "C0", label="this fit L*(C)")
  ax.plot(c, textless.optimal_loss(c), "C3--", label="textless SLM L*(C) (Cuervo & Marxer)")
  ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="loss",
         title="compute-optimal loss")
  ax.legend(fontsize=8)
  for (lw, tw, name, col) in ((law, textless, "N_opt", "C0"), (law, textless, "D_opt", "C2")):
    k = 0 if name == "N_opt" else 1
    ax2.plot(c, lw.compute_optimal(c)[k], color=col,
             label=f"{name} ~ C^{(lw.n_opt_exponent if k == 0 else lw.d_opt_exponent):.2f} (fit)")
    ax2.plot(c, tw.compute_optimal(c)[k], "--", color=col,
             label=f"{name} ~ C^{(tw.n_opt_exponent if k == 0 else tw.d_opt_exponent):.2f} (textless)")
    if laws:
      band = np.array([bl.compute_optimal(c)[k] for bl in laws])
      ax2.fill_between(c, *np.nanpercentile(band, [2.5, 97.5], axis=0), color=col, alpha=0.15)
  ax2.scatter(runs.flops, runs.params, color="C0", marker="x", s=20, label="runs (N)")
  ax2.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="parameters / tokens",
          title="compute-optimal allocation (band: bootstrap 95%)")
  ax2.legend(fontsize=7)
  _save(fig, path)


def metrics_vs_compute(runs: Runs, trends: dict, path: str) -> bool:
  """One panel per metric: runs, frontier, fitted power law, and the textless exponent (docs/reference.md §7) for slope.
  Returns False (and writes nothing) when the table has no metric columns."""
  names = [m for m in runs.metrics if np.isfinite(runs.metrics[m]).any()]
  if not names:
    return False
  cols = min(3, len(names))
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.8 * rows), squeeze=False)
  for ax, name in zip(axes.ravel(), names):
    v, t = runs.metrics[name], trends.get(name, {})
    ok = np.isfinite(v)
    ax.scatter(runs.flops[ok], v[ok], color="0.7", label="runs")
    idx = [runs.names.index(n) for n in t.get("frontier", [])]
    if idx:
      ax.scatter(runs.flops[idx], v[idx], color="C0", zorder=3, label="frontier")
    if "exponent" in t:
      c = _compute_range(runs)
      ax.plot(c, t["coef"] * c ** t["exponent"], "C0", label=f"fit: C^{t['exponent']:.3f}")
      if "textless_exponent" in t and idx:
        c0 = np.exp(np.mean(np.log(runs.flops[idx])))
        m0 = t["coef"] * c0 ** t["exponent"]
        ax.plot(c, m0 * (c / c0) ** t["textless_exponent"], "C3--",
                label=f"textless slope C^{t['textless_exponent']}")
    ax.set(xscale="log", xlabel="compute C (FLOPs)", ylabel=name, title=name)
    ax.legend(fontsize=7)
  for ax in axes.ravel()[len(names):]:
    ax.axis("off")
  _save(fig, path)
  return True


def _save(fig, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_all(runs: Runs, law: fit.Law, laws: list[fit.Law], trends: dict, out_dir: str) -> list[str]:
  """Writes the plots into out_dir; returns their paths."""
  paths = [os.path.join(out_dir, "loss_vs_compute.png"), os.path.join(out_dir, "frontier_vs_textless.png")]
  loss_vs_compute(runs, law, paths[0])
  frontier_vs_textless(runs, law, laws, paths[1])
  metric_path = os.path.join(out_dir, "metrics_vs_compute.png")
  if metrics_vs_compute(runs, trends, metric_path):
    paths.append(metric_path)
  return paths
