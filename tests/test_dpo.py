"""DPO against independent references: log 2 at the start, a torch computation of the DPO formula on
transformers' log-probs (and trl 1.16's own loss code) for loss and gradients, prompt tokens masked out, the
step on 8 devices with micro-batches, and reward accuracy on a separable synthetic preference set."""
import collections
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from hf_tiny import torch_model
from slm_jax.checkpoint.hf_import import from_torch_state_dict
from slm_jax.checkpoint.weight_map import flat_params, to_hf_name
from slm_jax.data.preference import Pair, pair_rows
from slm_jax.model import create_model, preset
from slm_jax.model.create import model_shardings
from slm_jax.sharding import make_mesh
from slm_jax.train import dpo
from slm_jax.train.checkpointing import abstract_like
from slm_jax.train.step import BATCH_KEYS, batch_sharding, compile_opt_init
from slm_jax.vocab import VocabLayout

LAYOUT = VocabLayout(base_size=2, num_units=60, bos_id=1, eos_id=1)  # SLAM-like: <S> 1 as BOS and EOS
CFG = preset("tiny-qwen2", vocab_size=LAYOUT.size)
T = 24
ONE = lambda: make_mesh(fsdp=1, devices=jax.devices()[:1])  # noqa: E731


def _pairs(n, seed=0, separable=False):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    p = rng.integers(0, LAYOUT.num_units, rng.integers(2, 8))
    if separable:  # chosen continues the prompt's last unit upwards; rejected is random
      c = (p[-1] + 1 + np.arange(rng.integers(4, 9))) % LAYOUT.num_units
    else:
      c = rng.integers(0, LAYOUT.num_units, rng.integers(1, 9))
    r = rng.integers(0, LAYOUT.num_units, rng.integers(1, 12))
    out.append(Pair(str(i), p.astype(np.int16), c.astype(np.int16), r.astype(np.int16)))
  return out


def _batch(pairs):
  rows = [pair_rows(p, LAYOUT, T) for p in pairs]
  return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def _with_ref(graphdef, ref_params, batch):
  ref = jax.jit(dpo.make_ref_logps(graphdef, loss_chunk=8))(ref_params, batch)
  return dict(batch, ref_logps=np.asarray(ref))


def test_pair_rows_mask_only_the_continuation():
  pair = Pair("x", np.array([5, 6, 7], np.int16), np.array([9, 9], np.int16), np.array([3], np.int16))
  b = pair_rows(pair, LAYOUT, 10)
  # chosen: <S> u5 u6 u7 | u9 u9 <S>   (ids: units + 2)
  np.testing.assert_array_equal(b["input_ids"][0, :6], [1, 7, 8, 9, 11, 11])
  np.testing.assert_array_equal(b["targets"][0, :6], [7, 8, 9, 11, 11, 1])
  np.testing.assert_array_equal(b["loss_mask"][0], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(b["loss_mask"][1], [0, 0, 0, 1, 1, 0, 0, 0, 0, 0])  # u3 <S>
  np.testing.assert_array_equal(b["segment_ids"][1], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
  long = Pair("y", np.arange(20, dtype=np.int16), np.arange(30, dtype=np.int16), np.array([1], np.int16))
  b = pair_rows(long, LAYOUT, 16, max_prompt_len=6)  # prompt keeps its last 6 tokens, continuation is cut
  np.testing.assert_array_equal(b["input_ids"][0, :6], np.arange(14, 20) + 2)
  assert b["loss_mask"][0].sum() == 11 and b["loss_mask"][0, 5:].all()


def test_policy_equal_to_reference_gives_log2_and_prompt_tokens_never_count():
  tm = torch_model(CFG, seed=0)
  graphdef, state = nnx.split(from_torch_state_dict(CFG, tm.state_dict(), ONE()))
  params = nnx.to_pure_dict(state)
  pairs = _pairs(6)
  batch = _with_ref(graphdef, params, _batch(pairs))
  losses = jax.jit(lambda p, b: [dpo.batch_loss(graphdef, p, b, beta=0.1, loss_type=t, loss_chunk=8)
                                 for t in ("sigmoid", "ipo")])(params, batch)
  for (loss, m), want in zip(losses, (math.log(2), (1 / (2 * 0.1)) ** 2)):
    assert np.float32(loss) == np.float32(want), float(loss)
    assert float(m["rewards/margins"]) == 0.0 and float(m["rewards/accuracies"]) == 0.0
  # the summed log-probs are transformers' log p of exactly the continuation tokens, located by index
  with torch.no_grad():
    lp = torch.log_softmax(tm(torch.tensor(batch["input_ids"]).long()).logits, -1).numpy()
  for i, pair in enumerate(pairs):
    for r, cont in enumerate((pair.chosen_units, pair.rejected_units)):
      seq = np.concatenate([[LAYOUT.bos_id], pair.prompt_units + 2, cont + 2, [LAYOUT.eos_id]])
      first = 1 + len(pair.prompt_units)  # BOS + prompt come first
      want = sum(lp[2 * i + r, j - 1, seq[j]] for j in range(first, len(seq)))
      np.testing.assert_allclose(batch["ref_logps"][2 * i + r], want, rtol=1e-5)


class _Acc:  # the parts of an accelerate.Accelerator that trl's _compute_loss touches, for one process
  device = torch.device("cpu")
  gather = gather_for_metrics = staticmethod(lambda x: x)
  autocast = staticmethod(lambda: __import__("contextlib").nullcontext())


def _trl_loss(policy, ref, batch, beta, loss_type):
  """trl 1.16 DPOTrainer._compute_loss on the same pairs (its layout: all chosen rows, then all rejected)."""
  pytest.importorskip("trl")
  from trl.trainer.dpo_trainer import DPOTrainer
  from trl.trainer.utils import add_fused_lm_head
  n = batch["segment_ids"].sum(1)
  full = np.zeros((len(n), T + 1), np.int64)
  comp = np.zeros_like(full)
  for i, k in enumerate(n):
    full[i, :k] = batch["input_ids"][i, :k]
    full[i, k] = batch["targets"][i, k - 1]
    comp[i, 1:] = batch["loss_mask"][i]
  order = np.concatenate([np.arange(0, len(n), 2), np.arange(1, len(n), 2)])
  inputs = {"input_ids": torch.tensor(full[order]), "attention_mask": torch.tensor((np.arange(T + 1) <= n[:, None])[order]).long(),
            "completion_mask": torch.tensor(comp[order])}
  add_fused_lm_head(policy, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
  add_fused_lm_head(ref)
  stub = types.SimpleNamespace(
      model=policy.train(), ref_model=ref, accelerator=_Acc(), beta=beta, precompute_ref_logps=False,
      loss_types=[loss_type], loss_weights=[1.0], ld_alpha=None, f_divergence_type="reverse_kl", use_weighting=False,
      aux_loss_enabled=False, label_smoothing=0.0, args=types.SimpleNamespace(gradient_checkpointing_kwargs=None),
      _metrics={"train": collections.defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
  loss = DPOTrainer._compute_loss(stub, policy, inputs, False)
  return loss, {k: v[-1] for k, v in stub._metrics["train"].items()}


def _torch_loss(policy, ref, batch, beta, loss_type, ls):
  """The DPO formula written out in torch on transformers' logits (rows interleaved chosen / rejected)."""
  ids, tgt = torch.tensor(batch["input_ids"]).long(), torch.tensor(batch["targets"]).long()
  att, mask = torch.tensor(batch["segment_ids"] > 0).long(), torch.tensor(batch["loss_mask"])

  def logps(m):
    lp = torch.log_softmax(m(ids, attention_mask=att).logits.float(), -1).gather(-1, tgt[..., None])[..., 0]
    return (lp * mask).sum(-1)
  pi = logps(policy)
  with torch.no_grad():
    rf = logps(ref)
  h_c, h_r = pi[0::2] - rf[0::2], pi[1::2] - rf[1::2]
  if loss_type == "ipo":
    cnt = mask.sum(-1)
    return ((h_c / cnt[0::2] - h_r / cnt[1::2] - 1 / (2 * beta)) ** 2).mean()
  z = beta * (h_c - h_r)
  return (-(1 - ls) * torch.nn.functional.logsigmoid(z) - ls * torch.nn.functional.logsigmoid(-z)).mean()


@pytest.mark.parametrize("loss_type,ls", [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0)])
def test_loss_and_gradients_match_torch_and_trl(loss_type, ls):
  beta = 0.5 if loss_type == "sigmoid" else 0.1
  mesh = ONE()
  policy_t, ref_t = torch_model(CFG, seed=0), torch_model(CFG, seed=1)
  policy = from_torch_state_dict(CFG, policy_t.state_dict(), mesh)
  ref = from_torch_state_dict(CFG, ref_t.state_dict(), mesh)
  graphdef, state = nnx.split(policy)
  params = nnx.to_pure_dict(state)
  batch = _with_ref(graphdef, nnx.to_pure_dict(nnx.state(ref)), _batch(_pairs(5, seed=3)))

  (loss, m), grads = jax.value_and_grad(
      lambda p: dpo.batch_loss(graphdef, p, batch, beta=beta, loss_type=loss_type, label_smoothing=ls,
                               loss_chunk=8), has_aux=True)(params)
  want = _torch_loss(policy_t, ref_t, batch, beta, loss_type, ls)
  policy_t.zero_grad()
  want.backward()
  np.testing.assert_allclose(float(loss), want.item(), rtol=2e-5)
  torch_grads = {n: p.grad.numpy() for n, p in policy_t.named_parameters()}
  for path, g in flat_params(grads).items():
    name, transpose = to_hf_name(path)
    g = np.asarray(g).T if transpose else np.asarray(g)
    ref_g = torch_grads[name]
    np.testing.assert_allclose(g[tuple(slice(0, s) for s in ref_g.shape)], ref_g, atol=2e-6 + 2e-4 * np.abs(ref_g).max(),
                               err_msg=name)
  if ls == 0.0:  # trl 1.16 has no label smoothing on its sigmoid loss
    policy_t.zero_grad()
    got, metrics = _trl_loss(policy_t, ref_t, batch, beta, loss_type)
    np.testing.assert_allclose(got.item(), float(loss), rtol=2e-5)
    got.backward()
    np.testing.assert_allclose(policy_t.model.embed_tokens.weight.grad.numpy(), torch_grads["model.embed_tokens.weight"],
                               atol=1e-6)
    for k in dpo.METRIC_NAMES:
      np.testing.assert_allclose(float(m[k]), metrics[k], rtol=1e-4, atol=1e-5, err_msg=k)


def _program(mesh, lr, micro=1, branches=None):
  graphdef, abstract_state, shardings = model_shardings(CFG, mesh)
  param_sh = nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, shardings), nnx.Param))
  abstract = abstract_like(nnx.to_pure_dict(nnx.state(nnx.merge(graphdef, abstract_state), nnx.Param)), param_sh)
  tx = optax.adam(lr)
  init, opt_sh = compile_opt_init(tx, abstract, param_sh, mesh)
  step = dpo.jit_dpo_step(dpo.make_dpo_step(graphdef, tx, micro_batches=micro, beta=0.5, loss_chunk=8,
                                            branches=branches), mesh, param_sh, opt_sh)
  ref = dpo.jit_ref_logps(dpo.make_ref_logps(graphdef, loss_chunk=8, branches=branches), mesh, param_sh)
  return graphdef, param_sh, init, step, ref


def _global(batch, mesh):
  bs = batch_sharding(mesh)
  out = {k: jax.device_put(batch[k], bs) for k in BATCH_KEYS}
  if "ref_logps" in batch:
    out["ref_logps"] = jax.device_put(batch["ref_logps"], jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(bs.spec[0])))
  return out


@pytest.mark.slow
def test_step_on_8_devices_with_micro_batches_equals_one_device():
  params0 = nnx.to_pure_dict(nnx.state(create_model(CFG, ONE(), seed=2), nnx.Param))
  host = _batch(_pairs(8, seed=5))
  out = []
  for mesh, micro in ((ONE(), 1), (make_mesh(data=2, fsdp=4), 2)):
    graphdef, param_sh, init, step, ref = _program(mesh, 1e-2, micro)
    params = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), params0, param_sh)
    b = _global(host, mesh)
    b["ref_logps"] = ref(params, b)
    opt = init(params)
    losses = []
    for i in range(2):
      params, opt, m = step(params, opt, b, i)
      losses.append(jax.device_get(m))
    out.append(losses)
  assert np.float32(out[0][0]["loss"]) == np.float32(math.log(2))
  for a, b in zip(*out):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    np.testing.assert_allclose(a["rewards/margins"], b["rewards/margins"], rtol=1e-4, atol=1e-6)
    assert a["count"] == b["count"] == host["loss_mask"].sum()


def test_reward_accuracy_rises_on_a_separable_preference_set():
  mesh = ONE()
  graphdef, param_sh, init, step, ref = _program(mesh, 3e-3)
  params = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s),
                        nnx.to_pure_dict(nnx.state(create_model(CFG, mesh, seed=4), nnx.Param)), param_sh)
  ref_params = jax.tree.map(jnp.copy, params)
  opt = init(params)
  evaluate = jax.jit(lambda p, b: dpo.batch_loss(graphdef, p, b, beta=0.5, loss_chunk=8)[1])
  held_out = _global(_batch(_pairs(32, seed=99, separable=True)), mesh)
  held_out["ref_logps"] = ref(ref_params, held_out)
  before = float(evaluate(params, held_out)["rewards/accuracies"])
  for i in range(30):
    b = _global(_batch(_pairs(8, seed=i, separable=True)), mesh)
    b["ref_logps"] = ref(ref_params, b)
    params, opt, m = step(params, opt, b, i)
  after = jax.device_get(evaluate(params, held_out))
  assert after["rewards/accuracies"] > 0.9 > before + 0.2, (before, after)
  assert after["rewards/margins"] > 0
