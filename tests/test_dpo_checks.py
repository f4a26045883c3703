"""DPO around the step: MFU counting the reference forward (hand-counted FLOPs), the config rules of
train/validate.py for objective='dpo' (each rule, all problems at once, tools/train.py exit 2), and precomputed
reference log-probs keyed by a fingerprint of the reference weights."""
import importlib.util
import os

import pytest

from slm_jax.train import aot, flops, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(**over):
  spec = importlib.util.spec_from_file_location("dpo_demo", os.path.join(ROOT, "configs", "dpo_demo.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("tiny")
  c.unlock()
  c.tensorboard = False
  for k, v in over.items():
    node, key = c, k.split(".")
    for part in key[:-1]:
      node = node[part]
    node[key[-1]] = v
  return c


# ---------------------------------------------------------------- MFU

def test_step_flops_count_the_reference_forward_only_when_it_runs():
  """Hand count for the tiny DPO model (hidden 32, MLP 64, 2 layers, 4 heads x 8, 2 kv heads, the slam layout's 504 rows,
  length 48): matmul weights per layer 32*32 (q) + 2*32*16 (k, v) + 32*32 (o) + 3*32*64 (MLP) = 9216, two layers
  plus the 32 x 504 head = 34,560; forward = 2 * 34,560 + causal attention 2*2*48*32*2 / 2 = 6,144 -> 75,264;
  training = 3 forwards; the in-memory reference adds one forward."""
  c = _tiny()
  cfg = aot.model_config(c)
  assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size) == (32, 64, 2, 504)
  fwd = 2 * (2 * (32 * 32 + 2 * 32 * 16 + 32 * 32 + 3 * 32 * 64) + 32 * 504) + 2 * 2 * 48 * 32 * 2 / 2
  assert fwd == 75264
  assert flops.step_flops_per_token(c, cfg) == 4 * fwd            # reference='model' (the tiny default)
  assert flops.step_flops_per_token(_tiny(**{"dpo.reference": "precomputed"}), cfg) == 3 * fwd
  lm = _tiny(objective="lm", **{"data.kind": "synthetic"})
  assert flops.step_flops_per_token(lm, cfg) == flops.flops_per_token(cfg, 48) == 3 * fwd
  # the trainer's MFU: 16 steps of 8 rows x 48 slots in 2 s on 1 device of peak 1e9 FLOP/s
  t = iter([0.0, 0.0, 2.0])
  chrono = trainer.Chrono(8 * 48, 100, 0.0, flops.step_flops_per_token(c, cfg), 1, 1e9, clock=lambda: next(t))
  for _ in range(17):  # the first step (compilation) is not timed
    chrono.tick()
  rep = chrono.report(17, 0, 0)
  assert rep["tokens_per_s"] == 16 * 8 * 48 / 2.0
  assert rep["mfu"] == pytest.approx(16 * 8 * 48 / 2.0 * 4 * fwd / 1e9, rel=1e-12)
