"""DPO around the step: MFU counting the reference forward (hand-counted FLOPs), the config rules of
train/validate.py for objective='dpo' (each rule, all problems at once, tools/train.py exit 2), and precomputed
reference log-probs keyed by a fingerprint of the reference weights."""
import os

import pytest

from repo_configs import ROOT, load_config, set_keys
from slm_jax.train import aot, flops, objectives, trainer
from xla_env import xla_flags


def _tiny(**over):
  c = load_config("dpo_demo", "tiny")
  c.unlock()
  c.tensorboard = False
  return set_keys(c, over)


# ---------------------------------------------------------------- MFU

def test_step_flops_count_the_reference_forward_only_when_it_runs():
  """Hand count for the tiny DPO model (hidden 32, MLP 64, 2 layers, 4 heads x 8, 2 kv heads, the slam layout's
  504 rows, length 48): matmul weights per layer 32*32 (q) + 2*32*16 (k, v) + 32*32 (o) + 3*32*64 (MLP) = 9216, two layers
  plus the 32 x 504 head = 34,560; forward = 2 * 34,560 + causal attention 2*2*48*32*2 / 2 = 6,144 -> 75,264;
  training = 3 forwards; the in-memory reference adds one forward."""
  c = _tiny()
  cfg = aot.model_config(c)
  assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size) == (32, 64, 2, 504)
  fwd = 2 * (2 * (32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 64) + 32 * 504) + 2 * 2 * 48 * 32 * 2 / 2
  assert fwd == 75264
  slot = lambda c: objectives.get(c).flops_per_slot(c, cfg)  # noqa: E731
  assert slot(c) == 4 * fwd            # reference='model' (the tiny default)
  assert slot(_tiny(**{"dpo.reference": "precomputed"})) == 3 * fwd
  # shared-prompt rows: a pair in 2 * 48 + 1 - 24 positions (max_prompt_len 24) instead of 2 * 48
  assert slot(_tiny(**{"dpo.shared_prompt": True})) == pytest.approx(4 * fwd * 73 / 96)
  lm = _tiny(objective="lm", **{"data.kind": "synthetic"})
  assert slot(lm) == flops.flops_per_token(cfg, 48) == 3 * fwd
  # the trainer's MFU: 16 steps of 8 rows x 48 slots in 2 s on 1 device of peak 1e9 FLOP/s
  t = iter([0.0, 0.0, 2.0])
  chrono = trainer.Chrono(8 * 48, 100, 0.0, slot(c), 1, 1e9, clock=lambda: next(t))
  for _ in range(17):  # the first step (compilation) is not timed
    chrono.tick()
  rep = chrono.report(17, 0, 0)
  assert rep["tokens_per_s"] == 16 * 8 * 48 / 2.0
  assert rep["mfu"] == pytest.approx(16 * 8 * 48 / 2.0 * 4 * fwd / 1e9, rel=1e-12)


# ---------------------------------------------------------------- config validation (objective='dpo')

def _problems(devices=1, workdir=None, process_count=1, **over):
  from slm_jax.train import validate
  return validate.problems(_tiny(**over), workdir, device_count=devices, process_count=process_count)


def _one(got, *needles):
  """The single problem that contains every needle."""
  hits = [p for p in got if all(n in p for n in needles)]
  assert len(hits) == 1, (needles, got)
  return hits[0]


@pytest.mark.parametrize("over,needles", [
    ({"data.kind": "synthetic"}, ("config.data.kind='synthetic'", "preference pairs")),
    ({"data.sources.preference": ""}, ("config.data.sources.preference: empty",)),
    ({"global_batch_size": 7}, ("config.global_batch_size=7", "must be even")),
    ({"global_batch_size": 12, "micro_batches": 4}, ("6 pairs", "micro_batches=4")),
    ({"dpo.beta": 0.0}, ("config.dpo.beta=0.0", "positive")),
    ({"dpo.beta": -0.1}, ("config.dpo.beta=-0.1", "positive")),
    ({"dpo.loss_type": "hinge"}, ("config.dpo.loss_type='hinge'", "sigmoid, ipo")),
    ({"dpo.label_smoothing": 0.5}, ("config.dpo.label_smoothing=0.5", "[0, 0.5)")),
    ({"dpo.label_smoothing": -0.1}, ("config.dpo.label_smoothing=-0.1", "[0, 0.5)")),
    ({"dpo.loss_type": "ipo", "dpo.label_smoothing": 0.1}, ("label_smoothing=0.1", "sigmoid loss only")),
    ({"dpo.reference": "disk"}, ("config.dpo.reference='disk'", "model, precomputed")),
    ({"dpo.max_prompt_len": 48}, ("config.dpo.max_prompt_len=48", "below config.seq_len=48")),
    ({"dpo.max_prompt_len": -1}, ("config.dpo.max_prompt_len=-1", ">= 0")),
    ({"dpo.shared_prompt": True, "model.attention_impl": "splash"}, ("config.dpo.shared_prompt=True",
                                                                     "attention_impl", "splash")),
    ({"data.sources.preference": "/nonexistent/pref"}, ("'/nonexistent/pref'", "no such folder")),
    ({"data.sources.preference": os.path.join(ROOT, "data", "demo", "prepared", "text")},
     ("not preference pairs",)),
])
def test_each_dpo_rule_names_its_field(over, needles):
  assert _problems() == []  # the tiny DPO config itself is valid
  _one(_problems(**over), *needles)


def test_dpo_rules_that_need_processes_a_run_or_another_objective(tmp_path):
  _one(_problems(devices=4, process_count=4, global_batch_size=12), "6 pairs", "4 processes")
  # shared-prompt rows are one per pair: 4 of them do not divide over 8 devices, 8 do
  _one(_problems(devices=8, **{"dpo.shared_prompt": True}), "global_batch_size=8 makes 4 rows (objective 'dpo')",
       "1 x 8 devices")
  assert _problems(devices=8) == [] == _problems(devices=8, global_batch_size=16, **{"dpo.shared_prompt": True})
  _one(_problems(objective="lm"), "config.data.kind='preference'",
       "objective='lm' trains on 'pipeline' or 'synthetic'")
  # a resumed run with the reference in memory reloads it from config.init
  (tmp_path / "checkpoints" / "3").mkdir(parents=True)
  missing = str(tmp_path / "gone")
  over = {"init.kind": "orbax", "init.path": missing}
  _one(_problems(workdir=str(tmp_path), **over), f"config.init.path={missing!r}", "reloads its reference")
  assert _problems(workdir=str(tmp_path), **over, **{"dpo.reference": "precomputed"}) == []
  assert f"config.init.path={missing!r}: no such folder" in _problems(**over)  # fresh start: the general rule


def test_every_dpo_problem_is_reported_at_once():
  got = _problems(global_batch_size=7, **{"data.kind": "synthetic", "dpo.beta": 0.0, "dpo.loss_type": "hinge",
                                         "dpo.label_smoothing": 0.7, "dpo.reference": "disk",
                                         "dpo.max_prompt_len": 60})
  for needles in (("data.kind='synthetic'",), ("global_batch_size=7", "even"), ("dpo.beta=0.0",),
                  ("dpo.loss_type='hinge'",), ("dpo.label_smoothing=0.7",), ("dpo.reference='disk'",),
                  ("dpo.max_prompt_len=60",)):
    _one(got, *needles)
  assert len(got) == 7, got


def test_train_tool_exits_2_listing_the_dpo_problems(tmp_path):
  import subprocess
  import sys
  workdir = tmp_path / "run"
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--config=configs/dpo_demo.py:tiny",
         f"--workdir={workdir}", "--config.tensorboard=False", "--config.dpo.beta=0", "--config.dpo.loss_type=hinge",
         "--config.global_batch_size=7"]
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stderr[-3000:]
  assert "Traceback" not in r.stderr and "3 problems" in r.stderr, r.stderr[-3000:]
  for key in ("dpo.beta=0", "dpo.loss_type='hinge'", "global_batch_size=7"):
    assert f"config.{key}" in r.stderr
  assert not workdir.exists()


# ---------------------------------------------------------------- precomputed reference keyed by the weights

def _numpy_leaf_sums(x):
  """Independent host computation of dpo._leaf_sums: uint32 sums (mod 2^32) of the bit patterns u, of u times the
  hashed row-major flat index, and of u * u."""
  import numpy as np
  u = x.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[x.dtype.itemsize]).astype(np.uint64).ravel()
  idx = np.arange(u.size, dtype=np.uint64)
  h = (idx * 0x9E3779B1 + 0x7F4A7C15) % 2**32
  h ^= h >> 15
  m = 2**32
  return [int(u.sum() % m), int(((u * h) % m).sum() % m), int(((u * u) % m).sum() % m)]


def test_params_fingerprint_is_exact_and_independent_of_the_sharding():
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  from slm_jax.train import dpo
  rng = np.random.default_rng(0)
  a = rng.standard_normal((8, 6)).astype(np.float32)
  b = rng.standard_normal((16,)).astype(np.float32)
  bf = jnp.asarray(b, jnp.bfloat16)
  for x in (a, np.asarray(bf)):
    got = np.asarray(jax.jit(dpo._leaf_sums)(jnp.asarray(x))).tolist()
    assert got == _numpy_leaf_sums(np.asarray(x)), x.dtype
  tree = {"layer": {"kernel": a, "scale": bf}, "head": b}
  fp = dpo.params_fingerprint(jax.tree.map(jnp.asarray, tree))
  assert len(fp) == 16 and fp == dpo.params_fingerprint(jax.tree.map(jnp.asarray, tree))
  mesh = jax.make_mesh((8,), ("fsdp",))
  assert len(jax.devices()) == 8
  sharded = {"layer": {"kernel": jax.device_put(a, NamedSharding(mesh, P("fsdp"))),
                       "scale": jax.device_put(bf, NamedSharding(mesh, P("fsdp")))},
             "head": jax.device_put(b, NamedSharding(mesh, P()))}
  assert dpo.params_fingerprint(sharded) == fp  # integer sums: any reduction order gives the same bits
  ulp = a.copy()
  ulp[3, 2] = np.nextafter(ulp[3, 2], np.float32(np.inf))
  swapped = a.copy()
  swapped[[0, 5]] = swapped[[5, 0]]
  for changed in ({**tree, "layer": {"kernel": ulp, "scale": bf}}, {**tree, "layer": {"kernel": swapped, "scale": bf}},
                  {**tree, "head": b.astype(np.float16)}, {"layer": tree["layer"], "lm_head": b}):
    assert dpo.params_fingerprint(jax.tree.map(jnp.asarray, changed)) != fp


def _save_tiny_checkpoint(folder, seed):
  """An Orbax checkpoint of the tiny DPO model (slam layout) with weights from `seed`."""
  from slm_jax.checkpoint import orbax_io
  from slm_jax.model.create import create_model
  from slm_jax.train.init import LAYOUTS
  layout = LAYOUTS["slam"]
  cfg = aot.model_config(_tiny()).replace(bos_token_id=layout.bos_id, eos_token_id=layout.eos_id)
  orbax_io.save_model(folder, create_model(cfg, seed=seed), orbax_io.make_meta(cfg, layout, "float32"), step=0)


@pytest.mark.slow  # ~1 min: two DPO runs and two resumes (default suite kept under 15 min on 2 cores)
def test_reference_logps_keyed_by_the_weights_and_checked_on_resume(tmp_path):
  """A checkpoint replaced at the same init path gets its own precomputed log-probs (first loss log 2 again, as
  the policy equals its reference); stored log-probs of other weights, and a reloaded reference that changed,
  are clear errors."""
  import math
  import shutil
  import numpy as np
  from slm_jax.checkpoint import orbax_io
  from slm_jax.train import dpo
  data, init = str(tmp_path / "pref"), str(tmp_path / "init")
  shutil.copytree(os.path.join(ROOT, "data", "demo", "prepared", "preference"), data,
                  ignore=shutil.ignore_patterns("reference_logps"))
  over = {"data.sources.preference": data, "init.kind": "orbax", "init.path": init, "eval_every": 0,
          "checkpoint_every": 100, "dpo.reference": "precomputed"}

  def fingerprint(workdir):
    meta, _ = orbax_io.read_meta(os.path.join(workdir, "checkpoints"))
    return meta["init_source"]["params_fingerprint"]

  _save_tiny_checkpoint(init, seed=1)
  a = trainer.train(_tiny(total_steps=1, **over), str(tmp_path / "a"))
  shutil.rmtree(init)
  _save_tiny_checkpoint(init, seed=2)  # other weights at the same path, same config
  b = trainer.train(_tiny(total_steps=1, **over), str(tmp_path / "b"))
  fa, fb = fingerprint(a["workdir"]), fingerprint(b["workdir"])
  assert fa != fb
  pa, pb = dpo.reference_path(_tiny(**over), fa), dpo.reference_path(_tiny(**over), fb)
  assert pa != pb and sorted(os.listdir(os.path.dirname(pa))) == sorted(map(os.path.basename, (pa, pb)))
  assert dpo.reference_path(_tiny(**over), fa) == pa  # same weights, same key
  for path, fp in ((pa, fa), (pb, fb)):
    with np.load(path) as f:
      assert str(f["fingerprint"]) == fp
  for run in (a, b):  # each run's stored log-probs are its own reference's: policy == reference at step 1
    assert np.float32(run["first_loss"]) == np.float32(math.log(2))
  # stale log-probs at the key of run a: resuming it is refused, naming both fingerprints
  shutil.copyfile(pb, pa)
  with pytest.raises(ValueError, match=f"fingerprint {fb}, this run's reference has {fa}"):
    trainer.train(_tiny(total_steps=2, **over), str(tmp_path / "a"))
  # reference in memory: a resumed run whose init checkpoint was replaced is refused
  model = {**over, "dpo.reference": "model"}
  c = trainer.train(_tiny(total_steps=1, **model), str(tmp_path / "c"))
  assert fingerprint(c["workdir"]) == fb
  shutil.rmtree(init)
  _save_tiny_checkpoint(init, seed=1)
  with pytest.raises(ValueError, match=f"fingerprint {fa}, recorded {fb}"):
    trainer.train(_tiny(total_steps=2, **model), str(tmp_path / "c"))
