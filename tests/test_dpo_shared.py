"""Shared-prompt DPO rows (dpo.shared_prompt): one row per pair, the prompt once and the chosen and rejected
continuations as branches that see the prompt and themselves only. Checked against the layout written out by
hand, the dense masked attention, transformers' log-probs of the two-row layout, the torch DPO formula (loss and
gradients) and the two-row step with micro-batches."""
import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from hf_tiny import torch_model
from slm_jax.checkpoint.hf_import import from_torch_state_dict
from slm_jax.checkpoint.weight_map import flat_params, to_hf_name
from slm_jax.data.preference import Pair, pair_rows, shared_branches, shared_pair_row
from slm_jax.model import create_model
from slm_jax.model import transformer as tr
from slm_jax.train import dpo
from test_dpo import CFG, LAYOUT, ONE, T, _pairs, _program, _torch_loss
from test_model import assert_blocked_attention_equals_full

MAX_PROMPT = 9  # prompts of _pairs are BOS + 2..7 units: within it, so both layouts keep the same tokens


def _batches(pairs):
  std = [pair_rows(p, LAYOUT, T, MAX_PROMPT) for p in pairs] + [pair_rows(None, LAYOUT, T, MAX_PROMPT)]
  sh = [shared_pair_row(p, LAYOUT, T, MAX_PROMPT) for p in pairs] + [shared_pair_row(None, LAYOUT, T, MAX_PROMPT)]
  cat = lambda rows: {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}  # noqa: E731
  return cat(std), cat(sh)


def test_shared_row_layout_written_out():
  pair = Pair("x", np.array([5, 6, 7], np.int16), np.array([9, 9], np.int16), np.array([3], np.int16))
  br = shared_branches(10, 4)
  assert br == tr.Branches(prefix=3, length=7) and br.total == 17
  b = shared_pair_row(pair, LAYOUT, 10, 4)
  # prefix: <S> u5 u6 (predicting u5 u6 u7, not counted); chosen branch: u7 u9 u9 -> u9 u9 <S>; rejected: u7 u3 -> u3 <S>
  np.testing.assert_array_equal(b["input_ids"][0], [1, 7, 8] + [9, 11, 11, 0, 0, 0, 0] + [9, 5, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(b["targets"][0], [7, 8, 9] + [11, 11, 1, 0, 0, 0, 0] + [5, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(b["positions"][0], [0, 1, 2] + [3, 4, 5, 0, 0, 0, 0] + [3, 4, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(b["loss_mask"][0], [0, 0, 0] + [1, 1, 1, 0, 0, 0, 0] + [1, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(b["segment_ids"][0], (b["input_ids"][0] > 0).astype(int))
  # the counted targets are exactly those of the two rows of pair_rows
  rows = pair_rows(pair, LAYOUT, 10, 4)
  for r, s in ((0, slice(3, 10)), (1, slice(10, 17))):
    np.testing.assert_array_equal(b["targets"][0, s][b["loss_mask"][0, s] > 0], rows["targets"][r][rows["loss_mask"][r] > 0])
  # query blocks (each region in equal blocks): the prefix and branch 1 are contiguous; branch 2 sees the prefix
  # and itself
  assert br.key_blocks(4) == [(0, 3, [(0, 3)]), (3, 6, [(0, 6)]), (6, 10, [(0, 10)]),
                              (10, 13, [(0, 3), (10, 13)]), (13, 17, [(0, 3), (10, 17)])]


def test_branch_attention_equals_the_dense_masked_attention():
  """The XLA path that skips other branches' keys gives the values and gradients of the one-block attention under
  the full branch mask, with padding inside every region."""
  br = tr.Branches(prefix=37, length=45)
  r = np.random.default_rng(0)
  B, N, K, H = 2, 4, 2, 8
  q, k, v = (jnp.asarray(r.normal(size=(B, br.total, n, H)), jnp.float32) for n in (N, K, K))
  seg = np.ones((B, br.total), np.int32)
  seg[0, 30:37] = seg[0, 37 + 40:37 + 45] = seg[1, 37 + 45 + 20:] = 0  # padded prefix, padded branches
  seg = jnp.asarray(seg)
  mask = (jnp.asarray(np.tril(np.ones((br.total, br.total), bool)) & br.visible())[None]
          & (seg[:, :, None] == seg[:, None, :]))
  assert not bool(mask[:, 37 + 45:, 37:37 + 45].any())  # rejected queries never see chosen keys
  assert_blocked_attention_equals_full(q, k, v, mask, False, br)


def test_shared_rows_give_transformers_logps_and_the_torch_loss_and_gradients():
  mesh = ONE()
  policy_t, ref_t = torch_model(CFG, seed=0), torch_model(CFG, seed=1)
  policy = from_torch_state_dict(CFG, policy_t.state_dict(), mesh)
  graphdef, state = nnx.split(policy)
  params = nnx.to_pure_dict(state)
  ref_params = nnx.to_pure_dict(nnx.state(from_torch_state_dict(CFG, ref_t.state_dict(), mesh)))
  std, sh = _batches(_pairs(5, seed=3))
  br = shared_branches(T, MAX_PROMPT)
  assert sh["input_ids"].shape == (6, br.total) and std["input_ids"].shape == (12, T)
  # the reference forward on shared rows: transformers' summed log-probs of the two-row layout, per sequence
  got = jax.jit(dpo.make_ref_logps(graphdef, loss_chunk=8, branches=br))(ref_params, sh)
  ids, tgt = torch.tensor(std["input_ids"]).long(), torch.tensor(std["targets"]).long()
  with torch.no_grad():
    lp = torch.log_softmax(ref_t(ids, attention_mask=torch.tensor(std["segment_ids"] > 0).long()).logits, -1)
    want = (lp.gather(-1, tgt[..., None])[..., 0] * torch.tensor(std["loss_mask"])).sum(-1).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert got[-2:].tolist() == [0.0, 0.0]  # the empty padding pair
  # loss, metrics and gradients: the torch DPO formula on the two-row layout
  std["ref_logps"] = sh["ref_logps"] = np.asarray(got)
  (loss, m), grads = jax.value_and_grad(
      lambda p: dpo.batch_loss(graphdef, p, sh, beta=0.5, loss_chunk=8, branches=br), has_aux=True)(params)
  (_, m_std) = dpo.batch_loss(graphdef, params, std, beta=0.5, loss_chunk=8)
  valid = {k: v[:10] for k, v in std.items()}  # torch's mean is over the 5 real pairs
  want = _torch_loss(policy_t, ref_t, valid, 0.5, "sigmoid", 0.0)
  policy_t.zero_grad()
  want.backward()
  np.testing.assert_allclose(float(loss), want.item(), rtol=2e-5)
  for k in dpo.METRIC_NAMES:
    np.testing.assert_allclose(float(m[k]), float(m_std[k]), rtol=1e-5, atol=1e-5, err_msg=k)
  torch_grads = {n: p.grad.numpy() for n, p in policy_t.named_parameters()}
  for path, g in flat_params(grads).items():
    name, transpose = to_hf_name(path)
    g = np.asarray(g).T if transpose else np.asarray(g)
    ref_g = torch_grads[name]
    np.testing.assert_allclose(g[tuple(slice(0, s) for s in ref_g.shape)], ref_g,
                               atol=2e-6 + 2e-4 * np.abs(ref_g).max(), err_msg=name)


def test_shared_step_with_micro_batches_equals_the_two_row_step():
  mesh = ONE()
  br = shared_branches(T, MAX_PROMPT)
  params0 = nnx.to_pure_dict(nnx.state(create_model(CFG, mesh, seed=2), nnx.Param))
  std, sh = _batches(_pairs(7, seed=5))  # 7 pairs + 1 empty: 4 per micro-batch
  out = []
  for micro, branches, b in ((1, None, std), (2, br, sh)):
    _, param_sh, init, run_step, run_ref = _program(mesh, 1e-2, micro, branches)
    params = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), params0, param_sh)
    b = dict(b, ref_logps=run_ref(params, b))
    opt = init(params)
    metrics = []
    for i in range(3):
      params, opt, m = run_step(params, opt, b, i)
      metrics.append(jax.device_get(m))
    out.append((metrics, jax.device_get(params)))
  (ma, pa), (mb, pb) = out
  for x, y in zip(ma, mb):
    for k in ("loss", "pairs", "count", "rewards/margins", "logps/chosen", "grad_norm"):
      np.testing.assert_allclose(x[k], y[k], rtol=2e-5, atol=1e-6, err_msg=k)
  assert mb[0]["pairs"] == 7 and mb[0]["count"] == std["loss_mask"].sum()
  # Adam divides by the gradient's running RMS, so near-zero gradients (rounding apart) move a weight by up to a
  # step either way: compare to 3% of one step (lr 1e-2)
  for x, y, x0 in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), jax.tree.leaves(params0)):
    np.testing.assert_allclose(x, y, atol=3e-4)
    assert np.abs(np.asarray(x) - np.asarray(x0)).max() > 1e-2  # and they did move
