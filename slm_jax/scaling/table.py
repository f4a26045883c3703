"""The runs table: one CSV row per finished training run (at least `params,tokens,loss`), read with checks."""
from __future__ import annotations

import csv
import dataclasses
import math
import os

import numpy as np

REQUIRED = ("params", "tokens", "loss")
# Columns that are never treated as metrics to fit against compute.
NOT_METRICS = frozenset({
    "name", "run", "model", "base_model", "workdir", "status", "params", "params_no_embed", "tokens", "loss",
    "flops", "flops_detailed", "tokens_processed", "steps", "total_steps", "token_budget", "seq_len", "batch_size",
    "global_batch_size", "seed"})
# Suffix/prefix hints for metrics where lower is better (losses, perplexities); the rest are accuracies.
LOWER_IS_BETTER_HINTS = ("loss", "ppl", "nll")
MIN_DISTINCT = 3  # different params values, and different tokens values, the parametric fit needs


def lower_is_better(metric: str) -> bool:
  return any(h in metric.lower() for h in LOWER_IS_BETTER_HINTS)


@dataclasses.dataclass
class Runs:
  """Columns of a runs CSV: `params`, `tokens`, `loss`, `flops` (6ND when absent) as float arrays, metrics
  (NaN where a run has no value) and the other columns as strings."""
  path: str
  names: list[str]
  params: np.ndarray
  tokens: np.ndarray
  loss: np.ndarray
  flops: np.ndarray
  flops_from_csv: bool
  metrics: dict[str, np.ndarray]

  def __len__(self):
    return len(self.params)


def _number(path, line, name, col, text, positive):
  where = f"{path}:{line} (run {name!r}), column {col!r}"
  try:
    v = float(text)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: not a number: {text!r}") from None
  if not math.isfinite(v) or (positive and v <= 0):
    raise ValueError(f"{where}: must be a positive finite number, got {text!r}")
  return v


def read_runs(path: str, metrics: list[str] | None = None) -> Runs:
  """Reads and checks a runs CSV. `metrics`: the metric columns to keep (default: every other numeric column)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"runs table {path} does not exist")
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    header = [h.strip() for h in (reader.fieldnames or [])]
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
  if not header:
    raise ValueError(f"{path}: empty file; expected a CSV header with at least {','.join(REQUIRED)}")
  missing = [c for c in REQUIRED if c not in header]
  if missing:
    raise ValueError(f"{path}: missing required column(s) {', '.join(missing)}; header is {','.join(header)} "
                     f"and must hold at least {','.join(REQUIRED)}")
  if metrics is None:
    metrics = [c for c in header if c not in NOT_METRICS and all(_is_number_or_blank(r.get(c)) for r in rows)
               and any(r.get(c) for r in rows)]
  else:
    absent = [m for m in metrics if m not in header]
    if absent:
      raise ValueError(f"{path}: metric column(s) {', '.join(absent)} not in header {','.join(header)}")
  has_flops = "flops" in header
  names, cols = [], {c: [] for c in ("params", "tokens", "loss", "flops")}
  mcols = {m: [] for m in metrics}
  for i, row in enumerate(rows):
    line = i + 2
    name = row.get("name") or row.get("run") or f"row {i + 1}"
    names.append(name)
    for c in REQUIRED:
      cols[c].append(_number(path, line, name, c, row.get(c), positive=True))
    if has_flops and row.get("flops"):
      cols["flops"].append(_number(path, line, name, "flops", row["flops"], positive=True))
    else:
      cols["flops"].append(6.0 * cols["params"][-1] * cols["tokens"][-1])
    for m in metrics:
      mcols[m].append(_number(path, line, name, m, row[m], positive=False) if row.get(m) else math.nan)
  return Runs(path, names, *(np.array(cols[c], np.float64) for c in ("params", "tokens", "loss", "flops")),
              has_flops, {m: np.array(v, np.float64) for m, v in mcols.items()})


def _is_number_or_blank(text) -> bool:
  if not text:
    return True
  try:
    float(text)
    return True
  except ValueError:
    return False


def check_fittable(runs: Runs) -> None:
  """Raises when the runs cannot determine the 5-parameter law."""
  n_params, n_tokens = len(np.unique(runs.params)), len(np.unique(runs.tokens))
  if len(runs) < 6 or n_params < MIN_DISTINCT or n_tokens < MIN_DISTINCT:
    raise ValueError(
        f"{runs.path}: too few points for the fit: {len(runs)} runs with {n_params} different params and "
        f"{n_tokens} different tokens values; L(N, D) = E + A/N^alpha + B/D^beta has 5 parameters and needs at "
        f"least 6 runs spanning at least {MIN_DISTINCT} model sizes and {MIN_DISTINCT} token counts")


def write_runs(path: str, rows: list[dict], columns: list[str] | None = None) -> list[str]:
  """Writes rows (dicts) as CSV; columns: REQUIRED first, then `columns` or every key in first-seen order."""
  if columns is None:
    columns = []
    for r in rows:
      columns += [k for k in r if k not in columns]
  columns = [c for c in ("name",) + REQUIRED + ("flops",) if c in columns] + \
      [c for c in columns if c not in ("name",) + REQUIRED + ("flops",)]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
      w.writerow({k: ("" if r.get(k) is None else r[k]) for k in columns})
  return columns
