"""Smoke runs of every tools/bench_*.py at tiny sizes: each exits 0 and prints figures that parse as positive,
finite numbers (the benches are otherwise run by hand, and a broken one goes unnoticed)."""
import json
import math
import os
import re
import subprocess
import sys
import time

import pytest

from xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tool: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
  env = dict(os.environ, XLA_FLAGS=xla_flags(), JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
             HF_HUB_OFFLINE="1", SLM_JAX_PROGRESS="0")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, f"{tool} exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
  return out


def _positive(d: dict, *keys: str) -> None:
  for k in keys:
    v = d[k]
    assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, f"{k}={v!r} in {d}"


def _json_lines(stdout: str) -> list[dict]:
  return [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]


def test_bench_train_alternates_the_sides_and_reports_medians():
  out = _run("bench_train.py", "--hidden_size=64", "--intermediate_size=128", "--num_layers=1", "--num_heads=2",
             "--num_kv_heads=1", "--vocab_size=512", "--seq_len=32", "--batch=2", "--steps=2", "--warmup=1",
             "--rounds=2", "--probe_size=128")
  rounds = re.findall(r"^round (\d) (jax|torch)", out.stdout, re.M)
  assert rounds == [("1", "jax"), ("1", "torch"), ("2", "jax"), ("2", "torch")], out.stdout
  res = json.loads(out.stdout.strip().splitlines()[-1])
  _positive(res, "jax_tokens_per_s", "torch_tokens_per_s", "ratio", "jax_step_s", "torch_step_s", "jax_mfu",
            "peak_flops", "flops_per_token")
  assert len(res["jax_round_medians"]) == len(res["torch_round_medians"]) == 2
  assert res["jax_first_loss"] == pytest.approx(res["torch_first_loss"], rel=1e-4)  # same weights, same batch


def test_bench_data_times_each_worker_count_and_leaves_no_shared_memory(tmp_path):
  def segments():  # multiprocessing.shared_memory's names (other jobs on the host may add their own meanwhile)
    return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")} if os.path.isdir("/dev/shm") else set()
  before = segments()
  out = _run("bench_data.py", f"--work_dir={tmp_path}", "--num_utterances=30", "--num_text=10", "--seq_len=256",
             "--global_batch_size=4", "--seconds=0.5", "--warmup_batches=1", "--workers=0,1")
  runs = [r for r in _json_lines(out.stdout) if "workers" in r]
  assert [r["workers"] for r in runs] == [0, 1], out.stdout
  for r in runs:
    _positive(r, "batches", "tokens_per_s", "label_tokens_per_s", "tokens_per_cpu_s", "cores_for_target", "fill")
    assert r["shm_open_after_close"] in (0, -1), r  # -1: no /proc to tell
  # the resource tracker unlinks what a process leaves at exit, and says so on stderr
  assert "leaked shared_memory" not in out.stderr, out.stderr[-2000:]
  deadline = time.time() + 10  # other jobs' segments come and go; none of this run's may stay
  while segments() - before and time.time() < deadline:
    time.sleep(0.2)
  assert not segments() - before


def test_bench_dpo_both_sides_tiny():
  out = _run("bench_dpo.py", "--steps=1", "--rounds=1", "--pairs=1", "--seq_len=64", "--num_layers=1",
             "--hidden_size=64")
  res = json.loads(out.stdout.strip().splitlines()[-1])
  _positive(res, "jax_pairs_per_s", "torch_pairs_per_s", "ratio", "jax_step_s", "torch_step_s", "jax_positions")


def test_bench_units_tiny():
  out = _run("bench_units.py", "--batch_size=1", "--seconds=0.5", "--repeats=1", "--num_hidden_layers=1",
             "--hidden_size=64", "--layer=1")
  res = json.loads(out.stdout[out.stdout.index("{"):])
  _positive(res, "jax_seconds", "jax_rtf", "torch_slamkit_rtf", "torch_same_work_rtf",
            "jax_speedup_vs_torch_same_work")
  assert res["unit_agreement"] > 0.9  # the same weights on both sides


def test_bench_eval_tiny():
  out = _run("bench_eval.py", "--pairs=4", "--torch_batch=8", "--tokens_per_batch=256", "--max_buckets=1",
             "--gen_batch=1", "--gen_new=4", "--num_layers=1")
  lines = {next(iter(d)): d for d in _json_lines(out.stdout)}
  _positive(lines["scoring"]["scoring"], "ours_pairs_per_s", "torch_sorted_pairs_per_s", "speedup_vs_best_torch")
  assert lines["scoring"]["scoring"]["max_abs_score_diff"] < 1e-3
  _positive(lines["generation"]["generation"], "ours_tokens_per_s", "torch_tokens_per_s", "speedup_vs_torch")


def test_bench_convert_tiny(tmp_path):
  out = _run("bench_convert.py", "--preset=tiny-llama", "--vocab_size=128256", f"--work_dir={tmp_path}")
  table = out.stdout[out.stdout.index("x ckpt"):]  # the rows after the header: step, wall s, peak RSS GB, x ckpt
  rows = re.findall(r"^(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", table, re.M)
  assert len(rows) == 6, out.stdout
  for name, wall, peak, ratio in rows:
    assert float(wall) >= 0 and float(peak) > 0 and float(ratio) > 0, name  # wall 0.0: a step under 50 ms
  assert "original tensors equal bit for bit" in out.stdout
  assert not os.listdir(tmp_path)  # the working folder is removed


def test_bench_vocoder_ours_alone_tiny():
  """The default suite's vocoder bench: our side alone on random weights (the comparison needs speechbrain's
  environment: the slow test below). Every clip gives 320 samples per unit."""
  out = _run("bench_vocoder.py", "--side=ours", "--repeats=1", "--clips=2", "--max_seconds=0.6")
  res = json.loads(out.stdout[out.stdout.index("{"):])
  _positive(res, "ours_seconds", "ours_rtf", "audio_seconds")
  assert len(res["units"]) == 2 and res["samples"] == [320 * n for n in res["units"]], res


@pytest.mark.slow  # its reference side needs speechbrain's own environment (as tests/test_vocoder_speechbrain.py)
def test_bench_vocoder_tiny():
  sb = os.environ.get("SLM_JAX_SPEECHBRAIN_PYTHON", os.path.expanduser("~/.cache/slm_jax/venv-speechbrain/bin/python"))
  if not os.path.isfile(sb):
    pytest.skip(f"no speechbrain environment at {sb} (see tests/test_vocoder_speechbrain.py)")
  out = _run("bench_vocoder.py", f"--sb_python={sb}", "--repeats=1", "--clips=2", "--max_seconds=1")
  res = json.loads(out.stdout[out.stdout.index("{"):])
  _positive(res, "ours_seconds", "speechbrain_seconds", "speedup")
