"""Runs CSV checks, fit.json of tools/fit_scaling.py, plots, compute accounting against published counts."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from slm_jax.model.config import PRESETS
from slm_jax.scaling import compute, fit, plots, report, table

TRUE = fit.Law(E=1.8, A=300.0, B=500.0, alpha=0.33, beta=0.30)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)
  return str(path)


def _synthetic_csv(path, noise=0.004, with_flops=False):
  rng = np.random.default_rng(0)
  rows = []
  for n in (1e8, 3e8, 1e9, 3e9):
    for d in (2e9, 6e9, 2e10, 6e10):
      c = 6 * n * d
      row = {"name": f"n{n:g}_d{d:g}", "params": n, "tokens": d,
             "loss": float(TRUE.loss(n, d) * np.exp(noise * rng.standard_normal())),
             "sblimp": 0.4 * (c / 1e18) ** 0.021, "tsc": "" if n == 1e8 else 0.6 * (c / 1e18) ** 0.03,
             "model": "qwen"}
      if with_flops:
        row["flops"] = c
      rows.append(row)
  table.write_runs(str(path), rows)
  return str(path)


def test_read_runs_columns_defaults_and_metrics(tmp_path):
  runs = table.read_runs(_synthetic_csv(tmp_path / "runs.csv"))
  assert len(runs) == 16 and not runs.flops_from_csv
  np.testing.assert_allclose(runs.flops, 6 * runs.params * runs.tokens)
  assert sorted(runs.metrics) == ["sblimp", "tsc"]  # 'model' is text, 'name' is known
  assert np.isnan(runs.metrics["tsc"][:4]).all() and np.isfinite(runs.metrics["tsc"][4:]).all()
  assert np.isfinite(runs.metrics["sblimp"]).all()
  with_flops = table.read_runs(_synthetic_csv(tmp_path / "f.csv", with_flops=True), metrics=["tsc"])
  assert with_flops.flops_from_csv and list(with_flops.metrics) == ["tsc"]


@pytest.mark.parametrize("text,match", [
    ("params,tokens\n1,2\n", r"missing required column\(s\) loss"),
    ("", "empty file"),
    ("name,params,tokens,loss\na,1e8,1e9,3.1\nb,1e8,-5,3.0\n", r"bad.csv:3 \(run 'b'\), column 'tokens'.*positive"),
    ("params,tokens,loss\n1e8,1e9,abc\n", r"bad.csv:2 \(run 'row 1'\), column 'loss': not a number"),
    ("params,tokens,loss\n1e8,1e9,0\n", "column 'loss': must be a positive"),
    ("params,tokens,loss\n1e8,,3\n", "column 'tokens': not a number"),
    ("params,tokens,loss,flops\n1e8,1e9,3,-1\n", "column 'flops': must be a positive"),
])
def test_bad_csv_errors(tmp_path, text, match):
  with pytest.raises(ValueError, match=match):
    table.read_runs(_write(tmp_path / "bad.csv", text))


def test_missing_file_and_unknown_metric(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.csv does not exist"):
    table.read_runs(str(tmp_path / "nope.csv"))
  with pytest.raises(ValueError, match="metric column.*swuggy not in header"):
    table.read_runs(_synthetic_csv(tmp_path / "r.csv"), metrics=["swuggy"])


def test_too_few_points(tmp_path):
  few = "params,tokens,loss\n" + "".join(f"{n},{d},3.0\n" for n in (1e8, 2e8) for d in (1e9, 2e9, 3e9, 4e9))
  runs = table.read_runs(_write(tmp_path / "few.csv", few))
  with pytest.raises(ValueError, match="too few points.*8 runs with 2 different params"):
    table.check_fittable(runs)
  five = "params,tokens,loss\n" + "".join(f"{1e8 * (i + 1)},{1e9 * (i + 1)},3.0\n" for i in range(5))
  with pytest.raises(ValueError, match="too few points.*5 runs"):
    report.analyze(table.read_runs(_write(tmp_path / "five.csv", five)), bootstrap=0)


def test_analyze_writes_fit_json_with_intervals_and_plots(tmp_path):
  runs = table.read_runs(_synthetic_csv(tmp_path / "runs.csv"))
  out, best, laws = report.analyze(runs, budgets=[1e20, 6.86e20], bootstrap=12, seed=0, log=None)
  report.write_json(str(tmp_path / "fit.json"), out)
  d = json.load(open(tmp_path / "fit.json"))
  for k in ("E", "A", "B", "alpha", "beta", "n_opt_exponent", "d_opt_exponent"):
    assert k in d and len(d["intervals"][k]) == 2, k
  assert abs(d["alpha"] - TRUE.alpha) < 0.05 and abs(d["beta"] - TRUE.beta) < 0.05
  lo, hi = d["intervals"]["alpha"]
  assert lo <= d["alpha"] <= hi
  np.testing.assert_allclose(d["n_opt_exponent"], d["beta"] / (d["alpha"] + d["beta"]))
  c = d["compute_optimal"][1]
  assert c["flops"] == 6.86e20
  n_opt, d_opt = best.law.compute_optimal(6.86e20)
  np.testing.assert_allclose([c["N_opt"], c["D_opt"]], [n_opt, d_opt])
  assert c["N_opt_interval"][0] <= c["N_opt"] <= c["N_opt_interval"][1]
  assert d["textless"]["compute_optimal"][1]["N_opt"] == pytest.approx(8.48e8, rel=5e-3)
  # Metric power laws on the frontier: sblimp was generated exactly as 0.4 (C/1e18)^0.021.
  assert d["metrics"]["sblimp"]["exponent"] == pytest.approx(0.021, rel=1e-6)
  assert d["metrics"]["sblimp"]["textless_exponent"] == 0.021
  assert d["metrics"]["tsc"]["num_runs"] == 12
  assert d["metrics"]["loss"]["lower_is_better"] and d["metrics"]["loss"]["exponent"] < 0
  assert d["fit"]["bootstrap_samples"] == len(laws) == 12
  paths = plots.plot_all(runs, best.law, laws, out["metrics"], str(tmp_path))
  assert [os.path.basename(p) for p in paths] == ["loss_vs_compute.png", "frontier_vs_textless.png",
                                                  "metrics_vs_compute.png"]
  for p in paths:
    with open(p, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_fit_scaling_tool_reports_bad_csv(tmp_path):
  bad = _write(tmp_path / "bad.csv", "params,loss\n1,2\n")
  p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "fit_scaling.py"), f"--runs={bad}",
                      f"--out_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
  assert p.returncode != 0
  assert "missing required column(s) tokens" in p.stderr


def test_param_counts_match_published_counts():
  # Hugging Face model cards / safetensors totals.
  published = {"llama3.2-1b": 1_235_814_400, "llama3.2-3b": 3_212_749_824, "qwen2.5-0.5b": 494_032_768,
               "qwen2.5-1.5b": 1_543_714_304, "qwen2.5-3b": 3_085_938_688, "qwen2.5-7b": 7_615_616_512}
  t = compute.preset_param_table()
  assert set(t) == set(PRESETS)
  for name, n in published.items():
    assert t[name]["params"] == n, name
    h, v = PRESETS[name].hidden_size, PRESETS[name].vocab_size
    assert t[name]["embed_params"] == v * h * (1 if PRESETS[name].tie_word_embeddings else 2)
  # The interleaved vocabulary (docs/reference.md §2): Qwen2.5 grows 151936 -> 152167 rows, Llama 128256 -> 128758.
  ext = compute.preset_param_table(["qwen2.5-0.5b", "llama3.2-1b"], extend_vocab=True)
  assert ext["qwen2.5-0.5b"]["params"] - published["qwen2.5-0.5b"] == (152167 - 151936) * 896
  assert ext["llama3.2-1b"]["params"] - published["llama3.2-1b"] == 502 * 2048


def test_sims_7b_compute_is_6nd():
  # docs/reference.md §5/§7: SIMS-7B, 7.6e9 params x 15e9 tokens = 6.86e20 FLOPs.
  n = compute.param_counts(compute.slm_config(PRESETS["qwen2.5-7b"]))["params"]
  assert compute.flops_6nd(n, 15e9) == pytest.approx(6.86e20, rel=2e-3)


def test_detailed_flops():
  """The detailed count is always there (an import error is an error, never a missing column)."""
  from slm_jax.train.flops import flops_per_token  # pylint: disable=g-import-not-at-top
  cfg = PRESETS["llama3.2-3b"]
  got = compute.flops_detailed(cfg, 2048, 1e9)
  assert isinstance(got, float) and got == pytest.approx(flops_per_token(cfg, 2048) * 1e9)
  # Matmul weights ~ all parameters for a tied model, attention adds a few percent at 2048: close to 6ND.
  assert 1.0 < got / compute.flops_6nd(cfg.num_params(), 1e9) < 1.15


def test_tokens_from_metrics(tmp_path):
  _write(tmp_path / "metrics.jsonl", '{"step": 1, "tokens": 100}\n{"step": 2, "tokens": 250, "loss": 3}\n'
         '{"eval/loss": 2.9}\n{"step": 3, "tok')  # a run killed mid-write
  assert compute.tokens_from_metrics(str(tmp_path)) == 250
