"""Ahead-of-time compilation (train/aot.py, tools/aot_compile.py): model shapes without weights, the tool's JSON
line and exit status on a simulated host, and TPU topologies (splash attention, v4's two devices per chip) where
libtpu is installed (the tests marked `tpu`: tools/run_tests.sh runs them in .venv-tpu)."""
import json
import os
import subprocess
import sys

import jax
import pytest

from repo_configs import load_config, set_keys
from slm_jax.train import aot
from slm_jax.train.config_base import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_recipe_model_shapes_without_weights():
  """Vocabularies as the HF import grows them: Llama-3 tokenizer 128,256 + 500 units + 2 markers; Qwen2.5's
  151,665 + 502 = 152,167 rows (above the 7B checkpoint's 152,064); SLAM's own 502 ids."""
  c3 = aot.model_config(load_config("sims_llama3_2_3b"))
  assert (c3.vocab_size, c3.hidden_size, c3.num_hidden_layers, c3.dtype, c3.remat) == (
      128758, 3072, 28, "bfloat16", True)
  c7 = aot.model_config(load_config("sims_qwen2_5", "7b"))
  assert (c7.vocab_size, c7.hidden_size, c7.tie_word_embeddings) == (152167, 3584, False)
  cs = aot.model_config(load_config("slam_qwen2_5_0_5b"))
  assert (cs.vocab_size, cs.rope_theta, cs.hidden_size) == (502, 10000.0, 896)


def test_tool_on_simulated_host_prints_json_and_fails_when_too_small():
  cmd = [sys.executable, os.path.join(ROOT, "tools", "aot_compile.py"), "--config=configs/demo.py:tiny",
         "--cpu_devices=4", "--hbm_gb=0.001", "--config.global_batch_size=8", "--config.seq_len=64"]
  env = dict(os.environ, XLA_FLAGS="")
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
  assert len(lines) == 1, out.stdout + out.stderr
  rec = json.loads(lines[0])
  assert out.returncode == 1 and rec["fits"] is False and "micro_batches" in out.stderr
  assert rec["devices"] == 4 and rec["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  assert rec["total_gb"] > 0.001 and rec["total_gb"] >= rec["argument_gb"] + rec["temp_gb"] - 1e-3
  assert rec["attention"] == "xla" and rec["jax"] == jax.__version__


@pytest.mark.tpu  # needs libtpu (conftest)
def test_v4_topology_has_two_devices_per_chip_and_v5e_1x1_one():
  devices = aot.topology_devices("v4:2x2x1")
  assert len(devices) == 8 and aot.cores_per_chip(devices) == 2
  c = base_config()
  mesh = aot.mesh_for(c, devices)
  assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  assert aot.device_memory(devices[0], 2)[0] == 16 * 2**30
  one = aot.topology_devices("v5e:1x1")  # smaller than a host's default 2x2 chips
  assert len(one) == 1 and aot.cores_per_chip(one) == 1


@pytest.mark.tpu  # needs libtpu (conftest)
def test_tpu_step_compiles_with_splash_attention():
  c = base_config()
  c.model.preset, c.init.kind, c.vocab.base_size = "tiny-llama", "random", 200
  c.global_batch_size, c.seq_len, c.precision = 8, 256, "bf16"
  cfg = aot.model_config(c)
  mesh = aot.mesh_for(c, aot.topology_devices("v5e:2x2"))
  with jax.default_matmul_precision("default"):  # conftest's "highest" has no bf16 Mosaic matmul
    rec = aot.compile_report(c, cfg, mesh, "v5e:2x2")
    prog = aot.build_program(c, cfg, mesh, 10)
    with jax.set_mesh(mesh):
      hlo = prog.train_step.jitted.lower(prog.abstract_params, prog.abstract_opt, aot.abstract_batch(c, mesh),
                                         jax.ShapeDtypeStruct((), "int32")).as_text()
  assert rec["attention"] == "splash" and rec["fits"] is True and rec["device_kind"] == "TPU v5 lite"
  assert "tpu_custom_call" in hlo  # the Pallas kernel, not interpret mode


def _dpo_tiny(**over):
  c = load_config("dpo_demo", "tiny")
  c.unlock()
  return set_keys(c, over)


def test_dpo_step_compiles_with_ref_logps_and_counts_the_reference_model(monkeypatch):
  """The DPO batch carries ref_logps (one float32 per row, sharded by row) into the trainer's jitted step; with the
  reference model in memory, its params (measured on device 0 from real arrays) and the peak of its forward
  program are in the total."""
  import numpy as np
  from slm_jax.model.create import create_model
  from slm_jax.train import dpo
  from flax import nnx
  monkeypatch.setattr(aot, "GB", 1.0)  # report bytes: the tiny model's sizes are far below 1 MB
  c = _dpo_tiny()
  cfg = aot.model_config(c)
  mesh = aot.mesh_for(c, jax.devices())
  batch = aot.abstract_batch(c, mesh)
  assert tuple(batch) == dpo.DPO_KEYS
  ref = batch["ref_logps"]
  rows = tuple(batch["input_ids"].sharding.spec[:1])
  assert (ref.shape, ref.dtype, tuple(ref.sharding.spec)) == ((8,), np.float32, rows)
  prog, compiled = aot.compile_step(c, cfg, mesh)
  assert compiled.args_info[0][2]["ref_logps"].shape == (8,)  # the step the trainer runs (jit_dpo_step)
  rec = aot.compile_report(c, cfg, mesh, "cpu x8")
  params = jax.device_put(nnx.to_pure_dict(nnx.state(create_model(cfg), nnx.Param)), prog.param_shardings)
  d0 = mesh.devices.flat[0]
  on_d0 = sum(s.data.nbytes for x in jax.tree.leaves(params) for s in x.addressable_shards if s.device == d0)
  assert rec["dpo_reference"] == "model" and rec["reference_params_gb"] == on_d0 > 0
  assert rec["total_gb"] == max(rec["train_step_gb"] + on_d0, rec["reference_forward_peak_gb"])
  assert rec["reference_forward_peak_gb"] > rec["reference_forward_temp_gb"] + on_d0
  assert "reference" in rec["total_note"]
  pre = aot.compile_report(_dpo_tiny(**{"dpo.reference": "precomputed"}), cfg, mesh, "cpu x8")
  assert pre["dpo_reference"] == "precomputed" and "reference_params_gb" not in pre
  assert pre["total_gb"] == rec["train_step_gb"]  # the same step, no reference in memory
  # shared-prompt rows: one per pair, 2 * 48 + 1 - 24 positions; still two reference log-probs per pair
  shared = _dpo_tiny(**{"dpo.shared_prompt": True, "global_batch_size": 16})
  b = aot.abstract_batch(shared, mesh)
  assert b["input_ids"].shape == (8, 73) and b["ref_logps"].shape == (16,)
  _, compiled = aot.compile_step(shared, cfg, mesh)
  assert compiled.args_info[0][2]["input_ids"].shape == (8, 73)


@pytest.mark.slow  # ~20 s: a tool process compiling the step and the reference forward (default suite kept under 15 min on 2 cores)
def test_tool_compiles_the_dpo_demo_config_from_its_orbax_checkpoint(tmp_path):
  """tools/aot_compile.py --config=configs/dpo_demo.py: the model comes from the Orbax checkpoint the run would
  start from (here a tiny one), the reference model's memory is reported."""
  from slm_jax.checkpoint import orbax_io
  from slm_jax.model.create import create_model
  from slm_jax.train.init import LAYOUTS
  layout = LAYOUTS["slam"]
  cfg = aot.model_config(_dpo_tiny()).replace(bos_token_id=layout.bos_id, eos_token_id=layout.eos_id)
  ckpt = str(tmp_path / "ckpt")
  orbax_io.save_model(ckpt, create_model(cfg), orbax_io.make_meta(cfg, layout, "float32"), step=0)
  cmd = [sys.executable, os.path.join(ROOT, "tools", "aot_compile.py"), "--config=configs/dpo_demo.py",
         "--cpu_devices=8", f"--config.init.path={ckpt}", "--hbm_gb=1"]
  out = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, XLA_FLAGS=""), capture_output=True, text=True,
                       timeout=600)
  lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
  assert out.returncode == 0 and len(lines) == 1, out.stdout + out.stderr[-3000:]
  rec = json.loads(lines[0])
  assert rec["model_source"] == f"orbax {ckpt}" and rec["vocab"] == 504 and rec["model"].startswith("llama")
  assert (rec["global_batch"], rec["seq_len"], rec["dpo_reference"], rec["fits"]) == (16, 128, "model", True)
  assert rec["total_gb"] >= rec["train_step_gb"] + rec["reference_params_gb"] - 1e-3
