"""A scaling sweep: base model x token budget -> training runs (schedules sized to the budget), launched one after
another locally, printed, or written as one SLURM script per run; finished runs collected into one CSV.

The sweep config (configs/scaling_*.py, ml_collections) names a training recipe (`train_config`, e.g.
configs/demo.py) and holds nested overrides of that recipe's keys: `overrides` for every run, `models.<name>` per
base model (a model's `train_config` entry replaces the recipe for its runs). Each run trains `total_steps = ceil(budget / (global_batch_size * seq_len * label_fraction))` steps,
so the warmup + cosine schedule ends exactly where the run ends, and validates once, at that last step; the CSV
records the label tokens actually trained on (the trainer's `tokens_seen`), so D in the fit is measured, not
nominal. After training, each `evals` entry runs tools/evaluate.py into <workdir>/eval/<benchmark>.json.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
import os
import shlex
import subprocess
from typing import Any, Callable

from slm_jax.scaling import compute

TRAIN_TOOL = "tools/train.py"
EVAL_TOOL = "tools/evaluate.py"
CHECKPOINTS = "checkpoints"  # slm_jax.train.trainer.CHECKPOINT_DIR
METRIC_KEYS = ("swuggy", "sblimp", "ssc", "tsc")


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the sweep."""
  name: str
  model: str
  train_config: str        # recipe file[:variant] for tools/train.py
  token_budget: float
  total_steps: int
  tokens_per_step: int
  seq_len: int
  workdir: str
  overrides: dict          # dotted recipe key -> value, passed as --config.KEY=VALUE
  evals: tuple = ()        # ({"benchmark", "data_dir", "args"}, ...)


# ---------------------------------------------------------------- configs
def load_config_file(spec: str, root: str = ".") -> Any:
  """`path.py[:variant]` -> the module's get_config(variant); the path is tried as given, then under root."""
  path, _, variant = spec.partition(":")
  if not os.path.exists(path) and os.path.exists(os.path.join(root, path)):
    path = os.path.join(root, path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path} does not exist")
  mod_spec = importlib.util.spec_from_file_location(f"_sweep_cfg_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return module.get_config(variant or None) if variant else module.get_config()


def flatten(d, prefix: str = "") -> dict:
  """Nested dict / ConfigDict -> {dotted key: leaf value}."""
  out = {}
  items = d.items() if hasattr(d, "items") else []
  for k, v in items:
    key = f"{prefix}{k}"
    if hasattr(v, "items") and not isinstance(v, str):
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def set_dotted(cfg, key: str, value, where: str) -> None:
  """cfg.a.b.c = value on a locked ConfigDict: unknown keys and wrong types fail with `where` in the message."""
  node, parts = cfg, key.split(".")
  for p in parts[:-1]:
    if p not in node:
      raise KeyError(f"{where}: the training config has no key {key!r} (no {p!r})")
    node = node[p]
  if parts[-1] not in node:
    raise KeyError(f"{where}: the training config has no key {key!r}")
  try:
    node[parts[-1]] = value
  except (TypeError, ValueError) as e:
    raise type(e)(f"{where}: cannot set {key}={value!r}: {e}") from None


def budget_tag(budget: float) -> str:
  """2e6 -> '2e6', 1.5e7 -> '1.5e7': compact and file-name safe."""
  mant, _, exp = f"{budget:.3g}".partition("e")
  return f"{mant}e{int(exp)}" if exp else mant


def expand(sweep, out_dir: str, root: str = ".") -> list[Run]:
  """The runs of a sweep config, in model-then-budget order; each run's recipe is built and checked here."""
  bases = {}
  common = flatten(sweep.get("overrides", {}))
  label_fraction = float(sweep.get("label_fraction", 1.0))
  if not 0 < label_fraction <= 1:
    raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
  budgets = [float(b) for b in sweep.token_budgets]
  if not budgets or min(budgets) <= 0:
    raise ValueError(f"token_budgets must be positive numbers, got {budgets}")
  if not sweep.models:
    raise ValueError("the sweep config has no models")
  evals = tuple(dict(e) for e in sweep.get("evals", ()) or ())
  for e in evals:
    if not e.get("benchmark") or not e.get("data_dir"):
      raise ValueError(f"each evals entry needs benchmark and data_dir, got {e}")
  runs = []
  for model, model_over in sweep.models.items():
    over = {**common, **flatten(model_over)}
    train_config = over.pop("train_config", None) or sweep.train_config
    if train_config not in bases:
      bases[train_config] = load_config_file(train_config, root)
    cfg = copy.deepcopy(bases[train_config])
    for k, v in over.items():
      set_dotted(cfg, k, v, f"sweep model {model!r}")
    per_step = int(cfg.global_batch_size) * int(cfg.seq_len)
    for budget in budgets:
      steps = max(1, int(math.ceil(budget / (per_step * label_fraction))))
      name = f"{model}_{budget_tag(budget)}"
      run_over = {**over, "total_steps": steps, "token_budget": 0.0, "eval_every": steps}
      run_cfg = copy.deepcopy(cfg)
      for k in ("total_steps", "token_budget", "eval_every"):
        set_dotted(run_cfg, k, run_over[k], f"run {name}")
      runs.append(Run(name, model, train_config, budget, steps, per_step, int(cfg.seq_len),
                      os.path.join(os.path.abspath(out_dir), "runs", name), run_over, evals))
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(f"run names collide: {sorted(n for n in names if names.count(n) > 1)}")
  return runs


# ---------------------------------------------------------------- commands
def flag_value(v) -> str:
  if isinstance(v, bool):
    return "true" if v else "false"
  if isinstance(v, float):
    return repr(v)
  if isinstance(v, (list, tuple)):
    return ",".join(flag_value(x) for x in v)
  return str(v)


def train_command(run: Run, python: str = "python") -> list[str]:
  return [python, TRAIN_TOOL, f"--config={run.train_config}", f"--workdir={run.workdir}"] + \
      [f"--config.{k}={flag_value(v)}" for k, v in run.overrides.items()]


def eval_path(run: Run, benchmark: str) -> str:
  return os.path.join(run.workdir, "eval", f"{benchmark}.json")


def eval_commands(run: Run, python: str = "python") -> list[list[str]]:
  return [[python, EVAL_TOOL, f"--ckpt={os.path.join(run.workdir, CHECKPOINTS)}", f"--benchmark={e['benchmark']}",
           f"--data_dir={e['data_dir']}", f"--out={eval_path(run, e['benchmark'])}", *list(e.get("args", ()))]
          for e in run.evals]


def shell(cmd: list[str]) -> str:
  return " ".join(shlex.quote(c) for c in cmd)


# ---------------------------------------------------------------- state of a run
@dataclasses.dataclass
class Status:
  finished: bool
  reason: str
  final: dict | None = None      # the metrics.jsonl record of the last step (with val_loss)
  missing_evals: tuple = ()


def run_status(run: Run) -> Status:
  """Finished = metrics.jsonl reached total_steps with a validation loss at that step."""
  path = os.path.join(run.workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return Status(False, "not started (no metrics.jsonl)")
  records = [r for r in compute.read_jsonl(path) if "step" in r]
  last = max((r["step"] for r in records), default=0)
  if last < run.total_steps:
    return Status(False, f"stopped at step {last} of {run.total_steps}")
  final = [r for r in records if r["step"] == last and r.get("val_loss") is not None]
  if not final:
    return Status(False, f"no validation loss at the final step {last} (eval_every must divide it)")
  missing = tuple(e["benchmark"] for e in run.evals if not os.path.exists(eval_path(run, e["benchmark"])))
  return Status(True, "finished", {k: v for r in final for k, v in r.items()}, missing)


# ---------------------------------------------------------------- launchers
def _subprocess_runner(cmd: list[str], log_path: str, cwd: str) -> int:
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a") as log:
    log.write(f"$ {shell(cmd)}\n")
    log.flush()
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, check=False).returncode


def launch_local(runs: list[Run], python: str, root: str = ".",
                 runner: Callable[[list[str], str, str], int] = _subprocess_runner,
                 log: Callable[[str], None] = print) -> dict[str, str]:
  """Trains (and evaluates) the runs one after another; finished runs are skipped, failures reported and passed.
  Returns {run name: outcome}. Each run's output goes to <workdir>/train.log (eval.log for evaluations)."""
  outcome = {}
  for i, run in enumerate(runs):
    st = run_status(run)
    prefix = f"[{i + 1}/{len(runs)}] {run.name}"
    if not st.finished:
      log(f"{prefix}: training {run.total_steps} steps ({run.token_budget:.3g} tokens)")
      rc = runner(train_command(run, python), os.path.join(run.workdir, "train.log"), root)
      st = run_status(run)
      if rc != 0 or not st.finished:
        outcome[run.name] = f"training failed (exit {rc}; {st.reason}); see {run.workdir}/train.log"
        log(f"{prefix}: {outcome[run.name]}")
        continue
    todo = [c for c, e in zip(eval_commands(run, python), run.evals)
            if not os.path.exists(eval_path(run, e["benchmark"]))]
    failed = []
    for cmd in todo:
      log(f"{prefix}: {cmd[3][2:]}")
      if runner(cmd, os.path.join(run.workdir, "eval.log"), root) != 0:
        failed.append(cmd[3].split("=", 1)[1])
    outcome[run.name] = "done" + (f", evals failed: {', '.join(failed)} (see eval.log)" if failed else "")
    log(f"{prefix}: {outcome[run.name]}")
  return outcome


def slurm_script(run: Run, root: str, slurm, python: str = "python") -> str:
  """An sbatch script: one task per node (jax.distributed starts from the SLURM environment), then evals."""
  s = slurm
  lines = ["#!/bin/bash", f"#SBATCH --job-name={run.name}", f"#SBATCH --output={run.workdir}/slurm-%j.out",
           f"#SBATCH --nodes={s.get('nodes', 1)}", "#SBATCH --ntasks-per-node=1",
           f"#SBATCH --time={s.get('time', '24:00:00')}"]
  for key in ("partition", "account", "qos"):
    if s.get(key):
      lines.append(f"#SBATCH --{key}={s[key]}")
  if s.get("gpus_per_node"):
    lines.append(f"#SBATCH --gpus-per-node={s['gpus_per_node']}")
  if s.get("cpus_per_task"):
    lines.append(f"#SBATCH --cpus-per-task={s['cpus_per_task']}")
  lines += [f"#SBATCH {x}" for x in s.get("extra", ())]
  lines += ["set -euo pipefail", f"cd {shlex.quote(os.path.abspath(root))}", *s.get("setup", ()),
            f"mkdir -p {shlex.quote(run.workdir)}",
            "# rerunning this script resumes from the latest checkpoint",
            "srun " + shell(train_command(run, python))]
  lines += [shell(c) for c in eval_commands(run, python)]
  return "\n".join(lines) + "\n"


def write_slurm(runs: list[Run], out_dir: str, root: str, slurm,
                python: str = "python") -> list[str]:
  """One <out_dir>/slurm/<run>.sbatch per unfinished run, and <out_dir>/slurm/submit_all.sh; returns the paths."""
  d = os.path.join(out_dir, "slurm")
  os.makedirs(d, exist_ok=True)
  paths = []
  for run in runs:
    if run_status(run).finished:
      continue
    p = os.path.join(d, f"{run.name}.sbatch")
    with open(p, "w") as f:
      f.write(slurm_script(run, root, slurm, python))
    paths.append(p)
  submit = os.path.join(d, "submit_all.sh")
  with open(submit, "w") as f:
    f.write("#!/bin/bash\nset -euo pipefail\n" + "".join(f"sbatch {shlex.quote(p)}\n" for p in paths))
  os.chmod(submit, 0o755)
  return paths + [submit]


# ---------------------------------------------------------------- collection
def model_config_of(run: Run):
  """The trained model's config, from the checkpoint metadata (vocabulary grown as the trainer grew it)."""
  from slm_jax.checkpoint import orbax_io  # pylint: disable=g-import-not-at-top
  from slm_jax.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  meta, _ = orbax_io.read_meta(os.path.join(run.workdir, CHECKPOINTS))
  return ModelConfig.from_dict(meta["model_config"])


def read_eval(path: str) -> float:
  import json  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    res = json.load(f)
  if "accuracy" not in res:
    raise ValueError(f"{path}: no 'accuracy' in the evaluation results")
  return float(res["accuracy"])


def collect(runs: list[Run], model_config: Callable[[Run], Any] = model_config_of) -> tuple[list[dict], dict]:
  """(one CSV row per finished run, {run name: why it was skipped or what is missing})."""
  rows, problems = [], {}
  for run in runs:
    st = run_status(run)
    if not st.finished:
      problems[run.name] = st.reason
      continue
    try:
      cfg = model_config(run)
    except (FileNotFoundError, KeyError, ValueError) as e:
      problems[run.name] = f"no readable checkpoint metadata: {e}"
      continue
    f = st.final
    counts = compute.param_counts(cfg)
    tokens = float(f["tokens_seen"])
    processed = float(f.get("tokens_processed") or run.total_steps * run.tokens_per_step)
    detailed = compute.flops_detailed(cfg, run.seq_len, processed)
    row = {"name": run.name, "model": run.model, "params": counts["params"],
           "params_no_embed": counts["params_no_embed"], "tokens": tokens, "loss": f["val_loss"],
           "flops": compute.flops_6nd(counts["params"], tokens), "flops_detailed": detailed,
           "tokens_processed": processed, "token_budget": run.token_budget, "steps": f["step"],
           "seq_len": run.seq_len, "train_loss": f.get("loss")}
    row.update({k: v for k, v in f.items() if k.startswith("val_loss_")})
    for e in run.evals:
      p = eval_path(run, e["benchmark"])
      try:
        row[e["benchmark"]] = read_eval(p) if os.path.exists(p) else None
      except (ValueError, OSError) as err:
        problems[run.name] = str(err)
        row[e["benchmark"]] = None
    if st.missing_evals:
      problems[run.name] = f"collected without evals {', '.join(st.missing_evals)}"
    row["workdir"] = run.workdir
    rows.append(row)
  return rows, problems
