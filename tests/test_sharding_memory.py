"""Optimizer state laid out like the parameters, and the compiled train step's per-device memory on 8 simulated
devices against a hand count of the state bytes (tiny Qwen2: untied head, q/k/v biases; AdamW with a weight-decay
mask, so optax nests the moments inside chain and masked states)."""
import math

import jax
import numpy as np
import optax
import pytest

from slm_jax.train import aot
from slm_jax.train.config_base import base_config
from slm_jax.train.program import abstract_batch


def _config(precision="mixed"):
  c = base_config()
  c.model.preset, c.init.kind = "tiny-qwen2", "random"
  c.vocab.base_size, c.vocab.num_units = 200, 50
  c.global_batch_size, c.seq_len, c.loss_chunk = 8, 64, 32
  c.precision = precision
  c.optim.weight_decay = 0.1
  return c


def _nbytes(tree):
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def compiled():
  """{devices: (program, compiled step)} for 2 and 8 devices."""
  c = _config()
  cfg = aot.model_config(c)
  return {n: aot.compile_step(c, cfg, aot.mesh_for(c, jax.devices()[:n])) for n in (2, 8)}


def test_every_optimizer_leaf_has_its_parameters_sharding(compiled):
  prog, _ = compiled[8]
  params = jax.tree.map(lambda a: jax.numpy.zeros(a.shape, a.dtype, device=a.sharding), prog.abstract_params)
  opt = prog.opt_init(params)
  moments = 0
  for name in ("mu", "nu"):
    trees = [getattr(s, name) for s in jax.tree.leaves(opt, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
             if isinstance(s, optax.ScaleByAdamState)]
    assert len(trees) == 1
    pairs = zip(jax.tree.leaves(trees[0]), jax.tree.leaves(prog.param_shardings))
    for leaf, want in pairs:
      assert leaf.sharding == want, (name, leaf.shape, leaf.sharding.spec, want.spec)
      moments += 1
  assert moments == 2 * len(jax.tree.leaves(prog.param_shardings))
  # the large ones are really split 8 ways, and the step counts are replicated
  assert any(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(opt))
  counts = [x for x in jax.tree.leaves(opt) if x.ndim == 0]
  assert counts and all(x.sharding.is_fully_replicated for x in counts)


def test_step_arguments_are_the_sharded_state_plus_the_batch(compiled):
  for n in (2, 8):
    prog, step = compiled[n]
    state = _nbytes(prog.abstract_params) + _nbytes(prog.abstract_opt)
    batch = _nbytes(abstract_batch(_config(), prog.mesh))
    args = step.memory_analysis().argument_size_in_bytes
    assert args <= 1.15 * state / n + batch / n + 64, (n, args, state / n, batch / n)


def test_per_device_memory_shrinks_with_devices(compiled):
  m2 = compiled[2][1].memory_analysis()
  m8 = compiled[8][1].memory_analysis()
  assert m8.argument_size_in_bytes < 0.4 * m2.argument_size_in_bytes
  assert (m8.argument_size_in_bytes + m8.temp_size_in_bytes) < 0.6 * (m2.argument_size_in_bytes
                                                                        + m2.temp_size_in_bytes)
