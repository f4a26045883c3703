"""Sweep expansion (schedules sized to budgets), launch scripts, local launching with a fake trainer, collection
into the runs CSV and a fit of it; one real tiny run through tools/sweep.py and tools/train.py."""
import csv
import json
import math
import os
import shlex
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from slm_jax.model.config import PRESETS
from slm_jax.scaling import compute, fit, report, sweep, table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAW = fit.Law(E=2.0, A=30.0, B=300.0, alpha=0.3, beta=0.35)


def _demo(arg=None):
  return sweep.load_config_file("configs/scaling_demo.py" + (f":{arg}" if arg else ""), ROOT)


def test_expand_demo_grid_sizes_schedules():
  cfg = _demo()
  runs = sweep.expand(cfg, "/tmp/sweep_out", root=ROOT)
  assert len(runs) == 9 and len({r.name for r in runs}) == 9
  by_name = {r.name: r for r in runs}
  r = by_name["m_8e4"]
  # configs/demo.py: 8 sequences x 256 tokens per step
  assert r.tokens_per_step == 8 * 256 and r.total_steps == math.ceil(8e4 / 2048) == 40
  assert r.overrides["total_steps"] == r.overrides["eval_every"] == 40 and r.overrides["token_budget"] == 0.0
  assert r.overrides["model.overrides.hidden_size"] == 64 and r.overrides["checkpoint_every"] == 0
  assert r.workdir == "/tmp/sweep_out/runs/m_8e4" and r.train_config == "configs/demo.py"
  cmd = sweep.train_command(r, "python")
  assert cmd[:4] == ["python", "tools/train.py", "--config=configs/demo.py", "--workdir=/tmp/sweep_out/runs/m_8e4"]
  assert "--config.model.overrides.num_hidden_layers=3" in cmd and "--config.tensorboard=false" in cmd
  cfg.label_fraction = 0.5
  assert sweep.expand(cfg, "/tmp/x", root=ROOT)[0].total_steps == math.ceil(4e4 / (2048 * 0.5))


def test_expand_sims_per_model_recipes():
  runs = {r.name: r for r in sweep.expand(sweep.load_config_file("configs/scaling_sims.py:/m", ROOT), "/o",
                                          root=ROOT)}
  assert len(runs) == 24
  q7 = runs["qwen7b_4.4e9"]
  assert q7.train_config == "configs/sims_qwen2_5.py:7b" and q7.tokens_per_step == 64 * 2048
  assert q7.total_steps == math.ceil(4.4e9 / (64 * 2048 * 0.99))
  assert q7.overrides["init.path"] == "/m/Qwen2.5-7B"
  l1 = runs["llama1b_2.2e10"]
  assert l1.train_config == "configs/sims_llama3_2_3b.py" and l1.overrides["model.preset"] == "llama3.2-1b"
  assert [e["benchmark"] for e in l1.evals] == ["swuggy", "sblimp", "ssc", "tsc"]


@pytest.mark.parametrize("change,err,match", [
    (lambda c: c.models.s.model.overrides.update({"hidden_sizes": 3}), KeyError,
     "sweep model 's'.*no key 'model.overrides.hidden_sizes'"),
    (lambda c: c.overrides.update({"seq_len": "long"}), TypeError, "cannot set seq_len='long'"),
    (lambda c: setattr(c, "token_budgets", (1e5, -1.0)), ValueError, "token_budgets must be positive"),
    (lambda c: setattr(c, "evals", [{"benchmark": "tsc"}]), ValueError, "needs benchmark and data_dir"),
    (lambda c: setattr(c, "train_config", "configs/nope.py"), FileNotFoundError, "nope.py does not exist"),
])
def test_expand_errors(change, err, match):
  cfg = _demo()
  change(cfg)
  with pytest.raises(err, match=match):
    sweep.expand(cfg, "/tmp/x", root=ROOT)


def _fake_trainer(params_of, fail=(), evals=True):
  """A runner standing in for tools/train.py / tools/evaluate.py: writes metrics.jsonl whose final validation loss
  follows LAW at the run's size and tokens (98% of the slots are labels), and eval JSONs."""
  calls = []

  def run(cmd, log_path, cwd):
    calls.append(cmd)
    args = dict(a[2:].split("=", 1) for a in cmd[2:] if a.startswith("--"))
    if cmd[1] == sweep.EVAL_TOOL:
      if not evals:
        return 1
      os.makedirs(os.path.dirname(args["out"]), exist_ok=True)
      with open(args["out"], "w") as f:
        json.dump({"benchmark": args["benchmark"], "accuracy": 0.55}, f)
      return 0
    workdir, steps = args["workdir"], int(args["config.total_steps"])
    model = os.path.basename(workdir).split("_")[0]
    os.makedirs(workdir, exist_ok=True)
    last = steps // 2 if os.path.basename(workdir) in fail else steps
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      for step in range(1, last + 1):
        seen = int(step * 2048 * 0.98)
        rec = {"step": step, "loss": 9.0, "tokens_seen": seen, "tokens_processed": step * 2048}
        if step == steps:
          rec.update(val_loss=float(LAW.loss(params_of[model], seen)), val_loss_unit=3.0, val_loss_text=2.0)
        f.write(json.dumps(rec) + "\n")
    return 1 if last < steps else 0
  return run, calls


def test_local_launch_fake_trainer_collect_and_fit(tmp_path):
  cfg = _demo()
  cfg.token_budgets = (2e5, 6e5, 2e6)
  runs = sweep.expand(cfg, str(tmp_path), root=ROOT)
  base = PRESETS["tiny-llama"]
  cfgs = {m: base.replace(vocab_size=1000, **dict(cfg.models[m].model.overrides)) for m in ("s", "m", "l")}
  params_of = {m: c.num_params() for m, c in cfgs.items()}
  runner, calls = _fake_trainer(params_of, fail={"m_6e5"})
  logs = []
  out = sweep.launch_local(runs, "py", runner=runner, log=logs.append)
  assert out["m_6e5"].startswith("training failed (exit 1; stopped at step 146 of 293)")
  assert sum(o == "done" for o in out.values()) == 8
  assert len([c for c in calls if c[1] == sweep.TRAIN_TOOL]) == 9 and len(calls) == 9 + 8 * 2
  rows, problems = sweep.collect(runs, model_config=lambda r: cfgs[r.model])
  assert problems == {"m_6e5": "stopped at step 146 of 293"} and len(rows) == 8
  row = {r["name"]: r for r in rows}["l_2e6"]
  steps = math.ceil(2e6 / 2048)
  assert row["steps"] == steps and row["tokens"] == int(steps * 2048 * 0.98)
  assert row["params"] == params_of["l"] and row["params_no_embed"] == cfgs["l"].num_params(embeddings=False)
  assert row["flops"] == 6.0 * row["params"] * row["tokens"]
  assert row["flops_detailed"] == pytest.approx(compute.flops_detailed(cfgs["l"], 256, steps * 2048))
  assert row["sblimp"] == row["tsc"] == 0.55 and row["val_loss_unit"] == 3.0
  # Relaunching skips finished runs and retries the failed one only.
  calls.clear()
  sweep.launch_local(runs, "py", runner=runner, log=logs.append)
  assert [os.path.basename(c[3].split("=")[1]) for c in calls if c[1] == sweep.TRAIN_TOOL] == ["m_6e5"]
  # The CSV reads back and the fit recovers the exponents the fake trainer's losses were drawn from.
  path = str(tmp_path / "runs.csv")
  table.write_runs(path, rows)
  assert open(path).readline().startswith("name,params,tokens,loss,flops,")
  runs_t = table.read_runs(path)
  assert set(runs_t.metrics) == {"sblimp", "tsc", "val_loss_unit", "val_loss_text", "train_loss"}
  out, best, _ = report.analyze(runs_t, bootstrap=0, log=None)
  np.testing.assert_allclose([best.law.alpha, best.law.beta], [LAW.alpha, LAW.beta], rtol=1e-3)


def test_collect_reports_missing_evals_and_unstarted(tmp_path):
  cfg = _demo()
  runs = sweep.expand(cfg, str(tmp_path), root=ROOT)[:2]
  runner, _ = _fake_trainer({"l": 1e6}, evals=False)
  out = sweep.launch_local(runs[:1], "py", runner=runner, log=lambda s: None)
  assert out[runs[0].name] == "done, evals failed: sblimp, tsc (see eval.log)"
  rows, problems = sweep.collect(runs, model_config=lambda r: PRESETS["tiny-llama"])
  assert len(rows) == 1 and rows[0]["sblimp"] is None
  assert problems == {runs[0].name: "collected without evals sblimp, tsc",
                      runs[1].name: "not started (no metrics.jsonl)"}


def test_slurm_scripts(tmp_path):
  cfg = sweep.load_config_file("configs/scaling_sims.py:/m", ROOT)
  cfg.slurm.partition = "gpu"
  runs = sweep.expand(cfg, str(tmp_path), root=ROOT)
  paths = sweep.write_slurm(runs, str(tmp_path), ROOT, cfg.slurm)
  assert len(paths) == 25 and paths[-1].endswith("submit_all.sh")
  text = open(os.path.join(tmp_path, "slurm", "qwen3b_1.1e10.sbatch")).read()
  lines = text.splitlines()
  assert lines[0] == "#!/bin/bash" and "#SBATCH --gpus-per-node=8" in lines and "#SBATCH --partition=gpu" in lines
  assert "#SBATCH --account=" not in text and f"cd {ROOT}" in lines and "source .venv/bin/activate" in lines
  srun = [l for l in lines if l.startswith("srun ")]
  run = {r.name: r for r in runs}["qwen3b_1.1e10"]
  assert len(srun) == 1 and shlex.split(srun[0])[1:] == sweep.train_command(run)
  assert sum(l.startswith("python tools/evaluate.py") for l in lines) == 4
  submit = open(paths[-1]).read().splitlines()
  assert submit[2:] == [f"sbatch {p}" for p in paths[:-1]]


@pytest.mark.slow  # ~20 s of CPU (compilation), ~1 min on a loaded machine
def test_real_tiny_run_through_tools(tmp_path):
  """tools/sweep.py -> tools/train.py (synthetic data, 10 steps) -> runs.csv, params from the checkpoint."""
  out = tmp_path / "sw"
  p = subprocess.run([sys.executable, "tools/sweep.py", "--config=configs/scaling_demo.py:synthetic",
                      f"--out_dir={out}", "--launch=local", "--only=s_2e4", "--config.token_budgets=(2e4,)"],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stdout + p.stderr + open(out / "runs" / "s_2e4" / "train.log").read()
  assert "collected 1 of 1 runs" in p.stdout
  with open(out / "runs.csv") as f:
    row = next(csv.DictReader(f))
  demo = sweep.load_config_file("configs/demo.py:synthetic", ROOT)
  layout_size = demo.vocab.base_size + demo.vocab.num_units + 2
  sizes = dict(_demo("synthetic").models.s.model.overrides)
  expected = PRESETS[demo.model.preset].replace(vocab_size=layout_size, **sizes)
  assert int(row["params"]) == expected.num_params()
  assert int(row["steps"]) == 10 and float(row["tokens_processed"]) == 10 * 2048
  summary = [json.loads(l) for l in open(out / "runs" / "s_2e4" / "train.log") if l.startswith("{")][-1]
  assert float(row["tokens"]) == summary["tokens_seen"]
  assert float(row["flops"]) == pytest.approx(6 * expected.num_params() * summary["tokens_seen"])
  assert 0 < float(row["loss"]) < 10 and float(row["val_loss_unit"]) > 0
