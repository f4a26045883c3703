"""The training run: configs load, exact resume after SIGKILL, SIGTERM saves, token-budget stop, a planted NaN stops
with the last good checkpoint intact, and training checkpoints load with orbax_io.load_model.

Subprocess runs use tools/train.py on `configs/demo.py:tiny` (synthetic data, 2-layer model) on one CPU device.
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from slm_jax.checkpoint import orbax_io
from slm_jax.sharding import make_mesh
from slm_jax.train import trainer
from slm_jax.train.metrics import read_jsonl
from repo_configs import load_config
from xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"demo.py": [None, "synthetic", "tiny"], "sims_llama3_2_3b.py": [None, "runlocal"],
           "sims_qwen2_5.py": ["0.5b", "1.5b", "3b", "7b"], "slam_qwen2_5_0_5b.py": [None]}
STEPS = 60


def test_every_config_loads_and_takes_run_overrides():
  for name, variants in CONFIGS.items():
    for arg in variants:
      c = load_config(name, arg)
      for key in ("total_steps", "checkpoint_every", "log_every", "token_budget", "max_wall_s", "eval_every"):
        assert key in c, (name, arg, key)
      c.total_steps, c.checkpoint_every, c.log_every = 40, 10, 1  # the overrides scripts use
      with pytest.raises(AttributeError):
        c.no_such_key = 1  # locked: a typo in an override fails
  slam = load_config("slam_qwen2_5_0_5b.py")
  assert (slam.model.vocab_size, slam.seq_len, slam.optim.lr, slam.global_batch_size, slam.micro_batches,
          slam.total_steps, slam.optim.warmup_min_steps, slam.model.overrides.rope_theta) == (
              502, 1024, 1e-3, 128, 16, 17625, 100, 10000.0)
  sims = load_config("sims_llama3_2_3b.py")
  o = sims.optim
  assert (o.lr, o.min_lr, o.warmup_frac, o.clip_norm, o.b1, o.b2, o.eps, o.weight_decay, sims.seq_len) == (
      5e-4, 5e-5, 0.01, 0.5, 0.9, 0.999, 1e-8, 0.0, 2048)
  with pytest.raises(ValueError, match="variant"):
    load_config("sims_qwen2_5.py", None)


# ---------------------------------------------------------------- subprocess runs of tools/train.py

def _cmd(workdir, *extra):
  return [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--config=configs/demo.py:tiny",
          f"--workdir={workdir}", f"--config.total_steps={STEPS}", "--config.log_every=1",
          "--config.tensorboard=False", *extra]


def _env():
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _start(workdir, *extra):
  return subprocess.Popen(_cmd(workdir, *extra), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _losses(workdir) -> dict:
  return {r["step"]: r["loss"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))}


def _wait_for_step(proc, workdir, step, timeout=240):
  t = time.time()
  while time.time() - t < timeout:
    got = _losses(workdir)
    if got and max(got) >= step:
      return max(got)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    time.sleep(0.02)
  raise TimeoutError(f"no step {step} in {workdir} after {timeout}s")


def _finish(proc, timeout=300):
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def test_resume_after_sigkill_and_sigterm_give_the_uninterrupted_losses(tmp_path):
  ref_dir, kill_dir, term_dir = (str(tmp_path / n) for n in ("ref", "kill", "term"))
  ref = _start(ref_dir, "--config.checkpoint_every=3")
  victim = _start(kill_dir, "--config.checkpoint_every=3")
  seen = _wait_for_step(victim, kill_dir, 12)
  victim.send_signal(signal.SIGKILL)
  assert victim.wait() == -signal.SIGKILL and seen < STEPS, "the run finished before it could be killed"
  rc, out = _finish(ref)
  assert rc == 0, out[-3000:]
  reference = _losses(ref_dir)
  assert sorted(reference) == list(range(1, STEPS + 1))
  assert reference[STEPS] < reference[1] - 0.5  # it learns

  resumed = _start(kill_dir, "--config.checkpoint_every=3")
  # a long run whose only checkpoint will be SIGTERM's
  term = _start(term_dir, "--config.checkpoint_every=100000", "--config.total_steps=100000")
  at = _wait_for_step(term, term_dir, 8)
  term.send_signal(signal.SIGTERM)
  rc, out = _finish(resumed)
  assert rc == 0, out[-3000:]
  assert "resuming from" in out and json.loads(out.strip().splitlines()[-1])["status"] == "total_steps"
  assert _losses(kill_dir) == reference  # bit-exact, every step

  rc, out = _finish(term)
  assert rc == 0, out[-3000:]
  summary = json.loads(out.strip().splitlines()[-1])
  assert summary["status"] == "preempted" and at <= summary["step"] < 100000
  meta, step = orbax_io.read_meta(os.path.join(term_dir, "checkpoints"))
  assert step == summary["step"] == max(_losses(term_dir)) and meta["step"] == step


# ---------------------------------------------------------------- in-process runs (8 simulated devices)

def _tiny(**overrides):
  c = load_config("demo.py", "tiny")
  c.unlock()
  c.global_batch_size, c.tensorboard = 8, False
  for k, v in overrides.items():
    c[k] = v
  c.lock()
  return c


def test_token_budget_stop_and_checkpoint_loads_for_eval(tmp_path):
  out = trainer.train(_tiny(total_steps=0, token_budget=900.0, checkpoint_every=1000, eval_every=2),
                      str(tmp_path))
  recs = read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert out["status"] == "token_budget"
  # validation on every 2nd step: one pass over eval_batches (2) batches of the validation split
  assert [r["step"] for r in recs if "val_loss" in r] == [r["step"] for r in recs if r["step"] % 2 == 0]
  assert all(abs(r["val_loss"] - r["loss"]) < 0.5 for r in recs if "val_loss" in r)  # same task, same scale
  assert recs[-1]["tokens_seen"] >= 900 > recs[-2]["tokens_seen"]  # stopped at the first step past the budget
  assert all({"step", "loss", "tokens_seen", "lr", "grad_norm"} <= set(r) for r in recs)
  assert out["tokens_seen"] == recs[-1]["tokens_seen"] and out["step"] == recs[-1]["step"]
  # the evaluator / converters read the training checkpoint: latest step by default
  model, meta, step = orbax_io.load_model(str(tmp_path / "checkpoints"), make_mesh())
  assert step == out["step"] and meta["kind"] == "train" and meta["tokens_seen"] == out["tokens_seen"]
  assert meta["vocab_layout"]["num_units"] == 100 and model.cfg.hidden_size == 32
  shardings = (tmp_path / trainer.SHARDINGS_FILE).read_text().splitlines()  # sharding.describe at the start
  assert shardings[0] == "mesh {'data': 1, 'fsdp': 8, 'tensor': 1}"
  assert any(ln.split()[:2] == ["model.embed_tokens.embedding", "(384,"] and "'fsdp'" in ln for ln in shardings)


def test_planted_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
  with pytest.raises(trainer.NonFiniteError, match=r"step 8 .*last good checkpoint is step 5"):
    trainer.train(_tiny(inject_nan_at_step=8, checkpoint_every=5), str(tmp_path))
  ckpt = str(tmp_path / "checkpoints")
  _, step = orbax_io.read_meta(ckpt)
  assert step == 5 and sorted(int(os.path.basename(p)) for p in glob.glob(ckpt + "/[0-9]*")) == [5]
  model, _, _ = orbax_io.load_model(ckpt, make_mesh())
  params = jax.tree.leaves(orbax_io.params_pure(model))
  assert all(np.isfinite(np.asarray(p)).all() for p in params)
  assert max(r["step"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))) == 7


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SLM_JAX_SLOW") != "1", reason="slow: set SLM_JAX_SLOW=1")
def test_two_processes_match_one_process_and_resume(tmp_path):
  """jax.distributed on CPU (2 processes x 2 devices) vs 1 process x 4 devices: same losses, one data-state file
  per process, and a restart of both processes resumes."""
  import socket
  def two(workdir, steps):
    with socket.socket() as s:
      s.bind(("localhost", 0))
      port = s.getsockname()[1]
    env = dict(_env(), XLA_FLAGS=xla_flags(2))
    procs = [subprocess.Popen(_cmd(workdir, f"--config.total_steps={steps}", "--config.global_batch_size=8",
                                   "--config.checkpoint_every=5", f"--coordinator_address=localhost:{port}",
                                   "--num_processes=2", f"--process_id={i}"), cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    for p in procs:
      rc, out = _finish(p)
      assert rc == 0, out[-3000:]
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  two(multi, 12)
  assert sorted(os.listdir(os.path.join(multi, "checkpoints", "10", "data"))) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
  two(multi, STEPS)  # same workdir, longer: resumes from step 12 (the schedule length changes, that is fine)
  ref = subprocess.run(_cmd(single, "--config.total_steps=12", "--config.global_batch_size=8"), cwd=ROOT,
                       env=dict(_env(), XLA_FLAGS=xla_flags(4)), capture_output=True,
                       text=True)
  assert ref.returncode == 0, ref.stdout[-3000:]
  got, want = _losses(multi), _losses(single)
  assert sorted(got) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([got[s] for s in range(1, 13)], [want[s] for s in range(1, 13)], rtol=1e-5)


# ---------------------------------------------------------------- the trainer's parts

class _Clock:
  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def test_chrono_skips_the_compiling_step_and_gives_throughput_and_eta():
  clock = _Clock()
  c = trainer.Chrono(tokens_per_step=1000, step_limit=10, token_budget=0.0, flops_per_token=6e6, n_devices=2,
                     peak=1e12, clock=clock)
  clock.t += 30.0  # step 1: compilation, not timed
  c.tick()
  for _ in range(4):  # steps 2..5: 2 s each
    clock.t += 2.0
    c.tick()
  r = c.report(step=5, tokens_seen=2000, tokens_processed=5000)
  assert r["tokens_per_s"] == 500.0 and r["eta_s"] == 10.0  # 5 steps left at 2 s
  assert r["tflops_per_device"] == 500.0 * 6e6 / 2 / 1e12 and r["mfu"] == 500.0 * 6e6 / 2 / 1e12
  c.restart()  # after logging / evaluation: a new interval
  clock.t += 1.0
  c.tick()
  assert c.report(step=6, tokens_seen=2400, tokens_processed=6000)["eta_s"] == 4.0
  # token budget: 8000 label tokens left at 0.4 labels per processed token and 1000 tokens/s
  b = trainer.Chrono(1000, 0, 10_000.0, 6e6, 1, None, clock=clock)
  b.tick()
  clock.t += 1.0
  b.tick()
  r = b.report(step=2, tokens_seen=2000, tokens_processed=5000)
  assert r["eta_s"] == 8000 / 0.4 / 1000 and r["mfu"] is None
  assert np.isnan(trainer.Chrono(1, 0, 0.0, 1.0, 1, None, clock=clock).report(0, 0, 0)["eta_s"])


def test_stopper_reasons_in_order():
  clock = _Clock()
  sig = trainer.SignalFlag(enabled=False)
  c = _tiny(total_steps=10, token_budget=500.0, max_wall_s=60.0)
  stop = trainer.Stopper(c, step_limit=10, t_start=clock.t, signals=sig, clock=clock)
  assert stop(3, 100, out_of_data=False) is None
  assert stop(3, 100, out_of_data=True) == "data_exhausted"
  sig.raised = "SIGTERM"
  assert stop(3, 100, False) == "preempted"
  sig.raised = "SIGINT"
  assert stop(3, 100, False) == "interrupted"
  clock.t += 61
  assert stop(3, 100, False) == "wall_clock"
  assert stop(3, 500, False) == "token_budget"
  assert stop(10, 500, False) == "total_steps"
