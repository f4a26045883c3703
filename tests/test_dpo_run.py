"""DPO through the one trainer (tools/train.py, config.objective='dpo'): exact resume after kill -9 with the
reference model reloaded, the first loss log 2, trl's metric names in metrics.jsonl, and reference log-probs
precomputed in a first pass and stored with the data giving the losses of the in-memory reference."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from repo_configs import load_config, set_keys
from slm_jax.checkpoint import orbax_io
from slm_jax.train import dpo, trainer
from slm_jax.train.metrics import read_jsonl
from xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12
PREF = os.path.join(ROOT, "data", "demo", "prepared", "preference")


def test_dpo_configs_carry_slamkits_values():
  c = load_config("dpo_slam_qwen2_5_0_5b.py")
  assert (c.objective, c.dpo.beta, c.dpo.loss_type, c.optim.lr, c.optim.min_lr, c.optim.warmup_min_steps,
          c.optim.clip_norm, c.global_batch_size, c.vocab.layout, c.data.kind) == (
              "dpo", 0.1, "sigmoid", 5e-5, 5e-5, 100, 0.5, 16, "slam", "preference")
  demo = load_config("dpo_demo.py")
  assert demo.init.kind == "orbax" and demo.data.sources.preference == "data/demo/prepared/preference"


def _env():
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _start(workdir):
  cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--config=configs/dpo_demo.py:tiny",
         f"--workdir={workdir}", f"--config.total_steps={STEPS}", "--config.tensorboard=False",
         "--config.async_checkpoint=False"]  # a checkpoint is complete before the next step is logged
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _losses(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  return {r["step"]: r["loss"] for r in read_jsonl(path)} if os.path.exists(path) else {}


def test_dpo_resume_after_sigkill_gives_the_uninterrupted_losses(tmp_path):
  from test_train_run import _finish, _wait_for_step
  ref_dir, kill_dir = str(tmp_path / "ref"), str(tmp_path / "kill")
  ref, victim = _start(ref_dir), _start(kill_dir)
  seen = _wait_for_step(victim, kill_dir, 7)
  victim.send_signal(signal.SIGKILL)
  assert victim.wait() == -signal.SIGKILL and seen < STEPS, "the run finished before it could be killed"
  rc, out = _finish(ref)
  assert rc == 0, out[-3000:]
  reference = _losses(ref_dir)
  assert sorted(reference) == list(range(1, STEPS + 1))
  assert np.float32(reference[1]) == np.float32(math.log(2))  # policy == reference at the start
  recs = read_jsonl(os.path.join(ref_dir, "metrics.jsonl"))
  assert set(dpo.METRIC_NAMES) <= set(recs[0]) and recs[0]["rewards/margins"] == 0.0
  rc, out = _finish(_start(kill_dir))
  assert rc == 0, out[-3000:]
  assert "resuming from" in out
  assert _losses(kill_dir) == reference  # bit-exact, every step (the reference model reloaded from init)


def _tiny(**over):
  c = load_config("dpo_demo.py", "tiny")
  c.unlock()
  c.tensorboard = False
  set_keys(c, over)
  c.lock()
  return c


def test_precomputed_reference_logps_stored_with_the_data_give_the_same_losses(tmp_path):
  data = str(tmp_path / "pref")
  shutil.copytree(PREF, data, ignore=shutil.ignore_patterns("reference_logps"))
  over = {"data.sources.preference": data, "total_steps": 4, "eval_every": 2, "eval_batches": 2,
          "checkpoint_every": 100}
  a = trainer.train(_tiny(**over), str(tmp_path / "model"))
  b = trainer.train(_tiny(**over, **{"dpo.reference": "precomputed"}), str(tmp_path / "pre"))
  stored = os.listdir(os.path.join(data, "reference_logps"))
  fps = [orbax_io.read_meta(os.path.join(r["workdir"], "checkpoints"))[0]["init_source"]["params_fingerprint"]
         for r in (a, b)]
  assert fps[0] == fps[1]  # both runs start from the same seeded weights
  assert len(stored) == 1 and stored[0] == os.path.basename(dpo.reference_path(_tiny(**over), fps[0]))
  with np.load(os.path.join(data, "reference_logps", stored[0])) as f:
    m = json.load(open(os.path.join(data, "manifest.json")))
    assert f["train"].shape == (m["splits"]["train"]["num_examples"], 2) and (f["train"] < 0).all()
    assert str(f["fingerprint"]) == fps[0]
  ra, rb = (read_jsonl(str(tmp_path / d / "metrics.jsonl")) for d in ("model", "pre"))
  # MFU's FLOPs per row slot (tflops_per_device / tokens_per_s on 8 devices): the tiny model's forward is 75,264
  # FLOPs per token (tests/test_dpo_checks.py); training counts 3, the in-memory reference one more
  for recs, forwards in ((ra, 4), (rb, 3)):
    timed = [r for r in recs if isinstance(r.get("tokens_per_s"), float) and math.isfinite(r["tokens_per_s"])]
    assert timed, recs
    for r in timed:
      assert r["tflops_per_device"] * 1e12 * 8 / r["tokens_per_s"] == pytest.approx(forwards * 75264, rel=1e-9)
  assert a["first_loss"] == b["first_loss"] and np.float32(a["first_loss"]) == np.float32(math.log(2))
  for x, y in zip(ra, rb):
    np.testing.assert_allclose(x["loss"], y["loss"], rtol=1e-5)
    if "val_loss" in x:
      np.testing.assert_allclose([x["val_loss"], x["val_rewards/accuracies"]],
                                 [y["val_loss"], y["val_rewards/accuracies"]], rtol=1e-5)
  assert any("val_rewards/margins" in r for r in ra)


def test_shared_prompt_rows_train_with_the_losses_of_two_rows(tmp_path):
  """dpo.shared_prompt through the trainer (precomputed reference pass, steps, validation, MFU): the losses of
  the two-row run. max_prompt_len 16 is below every demo prompt, so both layouts keep the same tokens."""
  data = str(tmp_path / "pref")
  shutil.copytree(PREF, data, ignore=shutil.ignore_patterns("reference_logps"))
  over = {"data.sources.preference": data, "total_steps": 3, "eval_every": 3, "eval_batches": 2,
          "checkpoint_every": 100, "dpo.max_prompt_len": 16, "dpo.reference": "precomputed",
          "global_batch_size": 16}  # 8 pairs: 8 shared rows over the 8 test devices
  trainer.train(_tiny(**over), str(tmp_path / "rows"))
  trainer.train(_tiny(**over, **{"dpo.shared_prompt": True}), str(tmp_path / "shared"))
  assert len(os.listdir(os.path.join(data, "reference_logps"))) == 2  # keyed by the layout too
  ra, rb = (read_jsonl(str(tmp_path / d / "metrics.jsonl")) for d in ("rows", "shared"))
  assert [r["step"] for r in ra] == [r["step"] for r in rb] == [1, 2, 3]
  for x, y in zip(ra, rb):
    for k in ("loss", "rewards/margins", "logps/chosen", "grad_norm") + (("val_loss", "val_logps/rejected")
                                                                          if "val_loss" in x else ()):
      np.testing.assert_allclose(x[k], y[k], rtol=2e-5, atol=1e-5, err_msg=k)
    if isinstance(y.get("tokens_per_s"), float) and math.isfinite(y["tokens_per_s"]):
      # MFU counts the positions computed: 2 * 48 + 1 - 16 per pair instead of 2 * 48, 3 forwards' worth
      assert y["tflops_per_device"] * 1e12 * 8 / y["tokens_per_s"] == pytest.approx(3 * 75264 * 81 / 96, rel=1e-9)
  assert any("val_loss" in r for r in rb)
