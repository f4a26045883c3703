"""A scaling sweep (base model x token budget): launch the training runs, then collect the finished ones.

  python tools/sweep.py --config=configs/scaling_demo.py --out_dir=runs/scaling_demo --launch=local
  python tools/sweep.py --config=configs/scaling_sims.py --out_dir=/scratch/sims --launch=slurm
  python tools/sweep.py --config=configs/scaling_sims.py --out_dir=/scratch/sims --launch=none  # collect only

--launch=local trains the runs one after another (finished ones are skipped, so rerunning resumes the sweep);
slurm writes <out_dir>/slurm/<run>.sbatch and submit_all.sh; print shows the commands. Every launch mode ends by
collecting the finished runs into <out_dir>/runs.csv (params, tokens, loss, flops, per-kind validation losses,
benchmark accuracies) for tools/fit_scaling.py, and lists the runs that are not finished.
"""
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from slm_jax import console
from slm_jax.scaling import sweep
from slm_jax.scaling.table import write_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config (configs/scaling_*.py[:variant]).")
_OUT = flags.DEFINE_string("out_dir", None, "Sweep folder: runs/<name>/, slurm/, runs.csv.")
_LAUNCH = flags.DEFINE_enum("launch", "print", ["local", "slurm", "print", "none"], "How to launch the runs.")
_ONLY = flags.DEFINE_list("only", None, "Restrict to these run names (default: all).")
_PYTHON = flags.DEFINE_string("python", None, "Python for the run commands (default: this interpreter for "
                              "local, 'python' for slurm / print).")
flags.mark_flags_as_required(["config", "out_dir"])


def main(argv):
  del argv
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  cfg = _CONFIG.value
  try:
    runs = sweep.expand(cfg, _OUT.value, root=ROOT)
  except (KeyError, ValueError, TypeError, FileNotFoundError) as e:
    sys.exit(f"sweep: {e}")
  if _ONLY.value:
    unknown = set(_ONLY.value) - {r.name for r in runs}
    if unknown:
      sys.exit(f"sweep: --only names unknown runs {sorted(unknown)}; runs are {[r.name for r in runs]}")
    runs = [r for r in runs if r.name in _ONLY.value]
  python = _PYTHON.value or (sys.executable if _LAUNCH.value == "local" else "python")
  print(f"{len(runs)} runs ({len(cfg.models)} models x {len(cfg.token_budgets)} budgets) in {_OUT.value}")
  if _LAUNCH.value == "print":
    for r in runs:
      print(f"# {r.name}: {r.total_steps} steps x {r.tokens_per_step} token slots")
      for c in [sweep.train_command(r, python)] + sweep.eval_commands(r, python):
        print(sweep.shell(c))
  elif _LAUNCH.value == "slurm":
    for p in sweep.write_slurm(runs, _OUT.value, ROOT, cfg.get("slurm", {}), python):
      print(f"wrote {p}")
  elif _LAUNCH.value == "local":
    sweep.launch_local(runs, python, root=ROOT)
  rows, problems = sweep.collect(runs)
  path = os.path.join(_OUT.value, "runs.csv")
  if rows:
    write_runs(path, rows)
  print(f"collected {len(rows)} of {len(runs)} runs" + (f" into {path}" if rows else ""))
  for name, why in problems.items():
    print(f"  {name}: {why}")


if __name__ == "__main__":
  app.run(main)
