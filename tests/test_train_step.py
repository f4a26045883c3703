"""The train step against independent references: a full-logits loss with jax.grad and a numpy AdamW, the same
step on 8 simulated devices (fsdp, fsdp x tensor), gradient accumulation, the LR schedule, precision modes and
the analytic FLOPs count."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from slm_jax.model import create_model, preset
from slm_jax.model.create import model_shardings
from slm_jax.sharding import make_mesh
from slm_jax.train import flops, lm, optimizer, step as step_lib
from slm_jax.train.synthetic import SyntheticIterator
from slm_jax.vocab import VocabLayout

LAYOUT = VocabLayout(base_size=200, num_units=50)
CFG = preset("tiny-llama", vocab_size=LAYOUT.size)
PEAK, EPS, WD = 1e-2, 1e-3, 0.1


def _batch(n=8, T=32, seed=0):
  return next(SyntheticIterator(LAYOUT, seq_len=T, global_batch_size=n, seed=seed))


@pytest.fixture(scope="module")
def start():
  model = create_model(CFG, make_mesh(fsdp=1, devices=jax.devices()[:1]), seed=3)
  graphdef, state = nnx.split(model)
  return graphdef, jax.tree.map(np.asarray, nnx.to_pure_dict(state))


def _tx(total=10):
  lr = optimizer.schedule(PEAK, PEAK / 10, total, warmup=0)
  return optimizer.make_optimizer(lr, eps=EPS, weight_decay=WD, clip_norm=0.5), lr


def _one_step(params_np, batch, mesh, micro=1, precision="fp32"):
  cfg = CFG.replace(param_dtype=optimizer.precision_dtypes(precision)[0],
                    dtype=optimizer.precision_dtypes(precision)[1])
  graphdef, _, shardings = model_shardings(cfg, mesh)  # graphdef carries the compute dtype
  param_sh = nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, shardings), nnx.Param))
  params = jax.tree.map(lambda x, s: jax.device_put(x.astype(cfg.param_dtype), s), params_np, param_sh)
  tx, lr = _tx()
  abstract_params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params, param_sh)
  init, opt_sh = step_lib.compile_opt_init(tx, abstract_params, param_sh, mesh)
  opt = init(params)
  fn = step_lib.jit_train_step(lm.make_train_step(graphdef, tx, lr, micro_batches=micro, loss_chunk=16),
                               mesh, param_sh, opt_sh)
  from slm_jax.train.data import global_batch
  new_params, new_opt, m = fn(params, opt, global_batch(batch, mesh), 0)
  return jax.tree.map(np.asarray, new_params), jax.tree.map(np.asarray, new_opt), jax.device_get(m)


def _naive_loss(graphdef, params, b):
  model = nnx.merge(graphdef, params)
  hidden = model(b["input_ids"], b["positions"], b["segment_ids"])
  logp = jax.nn.log_softmax(model.logits(hidden), axis=-1)  # full [B, T, V] fp32 logits: the plain way
  picked = jnp.take_along_axis(logp, b["targets"][..., None], axis=-1)[..., 0]
  m = b["loss_mask"]
  return -(picked * m).sum() / m.sum()


@pytest.fixture(scope="module")
def one_device(start):
  """The reference: one step of the 8-row batch on one device, no accumulation."""
  return _one_step(start[1], _batch(), make_mesh(fsdp=1, devices=jax.devices()[:1]))


def test_step_equals_full_logits_loss_and_numpy_adamw(start, one_device):
  graphdef, p0 = start
  b = _batch()
  new, _, m = one_device
  jb = {k: jnp.asarray(v) for k, v in b.items()}
  naive = jax.jit(jax.value_and_grad(lambda p, bb: _naive_loss(graphdef, p, bb)))
  loss, grads = naive(jax.tree.map(jnp.asarray, p0), jb)
  grads = jax.tree.map(np.asarray, grads)
  gnorm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in jax.tree.leaves(grads)))
  np.testing.assert_allclose(m["loss"], float(loss), rtol=1e-6)
  np.testing.assert_allclose(m["grad_norm"], gnorm, rtol=1e-5)
  assert m["count"] == b["loss_mask"].sum()
  # per-kind losses add up to the total (hand check: sum of nll sums / count)
  np.testing.assert_allclose(m["kind_nll"].sum() / m["kind_count"].sum(), m["loss"], rtol=1e-6)
  assert m["kind_count"].tolist() == [float(((b["kind"] == k) * b["loss_mask"]).sum()) for k in range(3)]
  # numpy AdamW, first step: m = (1-b1) g, v = (1-b2) g^2, bias-corrected -> g / (|g| + eps); decoupled decay
  scale = min(1.0, 0.5 / gnorm)
  flat_p, flat_g, flat_new = (jax.tree_util.tree_leaves_with_path(t) for t in (p0, grads, new))
  for (path, p), (_, g), (_, got) in zip(flat_p, flat_g, flat_new):
    g = g.astype(np.float64) * scale
    upd = g / (np.abs(g) + EPS) + (WD * p if p.ndim >= 2 else 0.0)
    np.testing.assert_allclose(got, p - PEAK * upd, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("shape", [dict(fsdp=8), dict(fsdp=2, tensor=4)], ids=["fsdp8", "fsdp2xtensor4"])
def test_sharded_step_equals_one_device(start, one_device, shape):
  graphdef, p0 = start
  b = _batch()
  ref, ref_opt, m1 = one_device
  mesh = make_mesh(**shape)
  got, got_opt, m8 = _one_step(p0, b, mesh)
  np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-6)
  np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-5)
  jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7), got, ref)
  jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-9), got_opt, ref_opt)


def test_four_micro_batches_equal_one_big_batch(start, one_device):
  graphdef, p0 = start
  b = _batch(n=8)
  ref, _, m1 = one_device
  got, _, m4 = _one_step(p0, b, make_mesh(fsdp=1, devices=jax.devices()[:1]), micro=4)
  assert m4["count"] == m1["count"]
  np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-6)
  np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-5)
  jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7), got, ref)


def test_bf16_precision_keeps_weights_and_moments_in_bf16(start, one_device):
  graphdef, p0 = start
  new, opt, m = _one_step(p0, _batch(), make_mesh(fsdp=1, devices=jax.devices()[:1]), micro=2, precision="bf16")
  assert {x.dtype for x in jax.tree.leaves(new)} == {jnp.dtype("bfloat16")}
  moments = [x for x in jax.tree.leaves(opt) if x.ndim >= 1]
  assert moments and {x.dtype for x in moments} == {jnp.dtype("bfloat16")}
  assert np.isfinite(m["loss"]) and m["finite"] == 1
  np.testing.assert_allclose(m["loss"], one_device[2]["loss"], rtol=2e-2)  # bf16 compute, same batch


def test_schedule_warmup_cosine_to_minimum():
  peak, low, total = 5e-4, 5e-5, 1000
  warm = optimizer.warmup_steps(total, 0.01)
  assert warm == 10
  lr = optimizer.schedule(peak, low, total, warm)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(5)), peak * 5 / 10, rtol=1e-6)
  for s in (10, 300, 505, 999, 1000):  # transformers' cosine_with_min_lr
    want = low + (peak - low) * 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
    np.testing.assert_allclose(float(lr(s)), want, rtol=1e-5)
  np.testing.assert_allclose(float(lr(5000)), low, rtol=1e-6)
  assert optimizer.warmup_steps(17625, 0.01, 100) == 177 and optimizer.warmup_steps(5000, 0.01, 100) == 100


def test_fused_loss_gradient_equals_autodiff_of_token_logprobs():
  """Untied head (qwen2), masked labels, T not a multiple of the chunk: value and every gradient, in fp32 and with
  bf16 compute (fp32 parameters), the latter against the fp32 autodiff reference."""
  from slm_jax.train.loss import fused_nll_sum, token_logprobs
  rng = np.random.default_rng(0)
  ids, tg = (jnp.asarray(rng.integers(0, 300, (2, 40))) for _ in range(2))
  mask = jnp.asarray((rng.random((2, 40)) < 0.8).astype(np.float32))
  got = {}
  for dtype in ("float32", "bfloat16"):
    cfg = preset("tiny-qwen2", vocab_size=300, dtype=dtype)
    graphdef, state = nnx.split(create_model(cfg, make_mesh(fsdp=1, devices=jax.devices()[:1]), seed=1))
    p = nnx.to_pure_dict(state)

    def ref(p):
      m = nnx.merge(graphdef, p)
      return -(token_logprobs(m, m(ids), tg, chunk_size=16) * mask).sum()

    def fused(p):
      m = nnx.merge(graphdef, p)
      return fused_nll_sum(m, m(ids), tg, mask, chunk_size=16)[0]

    got[dtype, "ref"] = jax.jit(jax.value_and_grad(ref))(p)
    got[dtype, "fused"] = jax.jit(jax.value_and_grad(fused))(p)

  def check(a, b, loss_rtol, grad_tol):
    (la, ga), (lb, gb) = got[a], got[b]
    np.testing.assert_allclose(float(la), float(lb), rtol=loss_rtol, err_msg=f"{a} vs {b}")
    worst = 0.0
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(ga), jax.tree.leaves(gb)):
      assert x.dtype == y.dtype == jnp.float32  # gradients of the fp32 parameters
      err = float(jnp.abs(x - y).max() / jnp.abs(y).max())
      assert err <= grad_tol, (a, b, jax.tree_util.keystr(path), err)
      worst = max(worst, err)
    return worst

  check(("float32", "fused"), ("float32", "ref"), 1e-6, 2e-6)  # measured: loss identical, gradients 4.8e-7
  # bf16 keeps 8 significant bits (unit roundoff u = 2^-8); a few roundings of activations and matmul operands
  # on the way give per-leaf errors of about 2.4u (median) and at most 5.2u of the leaf's largest entry (measured
  # 2.0e-2); bound 16u. The loss is summed in fp32: measured 3.0e-6 relative.
  bf16 = 16 * 2.0 ** -8
  check(("bfloat16", "fused"), ("bfloat16", "ref"), 1e-6, bf16)  # measured: loss identical, gradients 1.4e-2
  assert check(("bfloat16", "ref"), ("float32", "ref"), 3e-5, bf16) > 2.0 ** -8  # and the compute was bf16
  check(("bfloat16", "fused"), ("float32", "ref"), 3e-5, bf16)


def test_flops_llama3_2_3b_hand_count():
  cfg = preset("llama3.2-3b")
  T = 2048
  # per layer: q 3072x3072, k 3072x1024, v 3072x1024, o 3072x3072, gate/up/down 3 x 3072x8192
  per_layer = 3072 * 3072 + 3072 * 1024 + 3072 * 1024 + 3072 * 3072 + 3 * 3072 * 8192
  assert per_layer == 100_663_296
  head = 3072 * 128256                               # tied output head, logical vocabulary
  matmul = 28 * per_layer + head                     # 2,818,572,288 + 394,002,432 weights in matmuls
  assert matmul == 3_212_574_720 == cfg.num_params() - (28 * 2 + 1) * 3072  # all parameters but the norms
  attn = 28 * 2 * 2 * T * (24 * 128) / 2             # q.k and p.v, 2 FLOPs per MAC, causal half
  forward = 2 * matmul + attn                        # 6,425,149,440 + 352,321,536
  assert forward == 6_777_470_976
  assert flops.flops_per_token(cfg, T) == 3 * forward == 20_332_412_928
  assert flops.flops_per_token(cfg, T, training=False) == forward
  assert flops.flops_per_token_6n(cfg) == 6 * 3_212_749_824


def test_peak_flops_table_and_unknown():
  assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert flops.peak_flops("NVIDIA H100 PCIe") == 756e12
  assert flops.peak_flops("NVIDIA H200") == 989e12
  assert flops.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
  assert flops.peak_flops("TPU v4") == 275e12
  assert flops.peak_flops("TPU v5 lite") == 197e12
  assert flops.peak_flops("TPU v5p") == 459e12
  assert flops.peak_flops("TPU v6 lite") == 918e12
  assert flops.peak_flops("NVIDIA GeForce RTX 4090") is None
  assert flops.peak_flops("NVIDIA H100 80GB HBM3", "float32") is None
