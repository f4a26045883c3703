"""Fits L(N, D) = E + A/N^alpha + B/D^beta to a runs table (docs/reference.md §8) and writes fit.json and PNG plots.

  python tools/fit_scaling.py --runs=runs.csv --out_dir=fits/ [--bootstrap=100] [--budgets=1e20,6.86e20]

runs.csv: at least the columns params,tokens,loss; optional flops (else 6 * params * tokens) and metric columns
(sWUGGY, sBLIMP, ..., per-kind losses), fitted as power laws of compute on their frontier.
"""
import os
import sys

from absl import app, flags, logging

from slm_jax import console
from slm_jax.scaling import plots, report
from slm_jax.scaling.table import read_runs

_RUNS = flags.DEFINE_string("runs", None, "CSV with columns params,tokens,loss[,flops,metrics...].", required=True)
_OUT = flags.DEFINE_string("out_dir", None, "Where fit.json and the plots go.", required=True)
_BOOT = flags.DEFINE_integer("bootstrap", 100, "Bootstrap resamples for the confidence intervals (0: none).")
_CONF = flags.DEFINE_float("confidence", 0.95, "Confidence level of the intervals.")
_SEED = flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
_BUDGETS = flags.DEFINE_list("budgets", [], "Compute budgets (FLOPs) for N_opt / D_opt; default: the data's "
                             "range and the SIMS budgets 2e20, 6.86e20.")
_METRICS = flags.DEFINE_list("metrics", None, "Metric columns to fit against compute (default: every numeric "
                             "column other than the known ones).")
_PLOTS = flags.DEFINE_bool("plots", True, "Write PNG plots.")


def main(argv):
  del argv
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  try:
    runs = read_runs(_RUNS.value, metrics=_METRICS.value)
    budgets = [float(b) for b in _BUDGETS.value] or None
    out, best, laws = report.analyze(runs, budgets, bootstrap=_BOOT.value, seed=_SEED.value,
                                     confidence=_CONF.value, log=logging.info)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"fit_scaling: {e}")
  path = os.path.join(_OUT.value, "fit.json")
  report.write_json(path, out)
  law = best.law
  print(f"{len(runs)} runs from {runs.path}")
  print(f"L(N, D) = {law.E:.4g} + {law.A:.4g} / N^{law.alpha:.4f} + {law.B:.4g} / D^{law.beta:.4f}")
  for k in ("E", "A", "B", "alpha", "beta", "n_opt_exponent", "d_opt_exponent"):
    ci = out["intervals"].get(k)
    print(f"  {k:15s} {out[k]:.4g}" + (f"  [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""))
  for e in out["compute_optimal"]:
    print(f"  C={e['flops']:.3g}: N_opt={e['N_opt']:.3g} D_opt={e['D_opt']:.3g}")
  for name, t in out["metrics"].items():
    if "exponent" in t:
      print(f"  {name}: ~ C^{t['exponent']:.4f} on {len(t['frontier'])} frontier runs")
  print(f"wrote {path}")
  if _PLOTS.value:
    for p in plots.plot_all(runs, law, laws, out["metrics"], _OUT.value):
      print(f"wrote {p}")


if __name__ == "__main__":
  app.run(main)
