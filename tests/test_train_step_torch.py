"""The language-modelling train step's loss and gradient against transformers in torch: a tiny random Llama /
Qwen2 (fp32) converted into our parameters, a packed batch (several documents per row, positions restarting,
padding, some labels masked out), with and without gradient accumulation and the fused loss gradient. The torch
side runs each document on its own and averages -log p over the unmasked labels; the step's gradient is read
exactly, through an optimizer whose state is the gradient it was given."""
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
from slm_jax.model import preset
from slm_jax.sharding import make_mesh
from slm_jax.train import lm

V, T = 300, 24  # vocabulary padded to 1024 by the preset's multiple: padded rows must get no gradient
ROWS = [[9, 7], [24], [5, 11, 6], [3]]  # document lengths per row; the rest of a row is padding (segment 0)


def _docs_and_batch(seed=0):
  """Documents (one list per row) and our packed batch of them, built by hand: targets are the next token of the
  same document, the last token of a document has no label, and about a fifth of the other labels are masked."""
  rng = np.random.default_rng(seed)
  docs = [[rng.integers(0, V, n) for n in lens] for lens in ROWS]
  b = {k: np.zeros((len(ROWS), T), np.int32) for k in ("input_ids", "targets", "segment_ids", "positions", "kind")}
  b["loss_mask"] = np.zeros((len(ROWS), T), np.float32)
  for r, row in enumerate(docs):
    start = 0
    for s, d in enumerate(row, 1):
      n, sl = len(d), slice(start, start + len(d))
      b["input_ids"][r, sl], b["segment_ids"][r, sl], b["positions"][r, sl] = d, s, np.arange(n)
      b["targets"][r, start:start + n - 1] = d[1:]
      b["loss_mask"][r, start:start + n - 1] = rng.random(n - 1) < 0.8
      start += n
  b["kind"] = (b["targets"] % 3).astype(np.int32)  # any kinds: they only split the reported losses
  return docs, b


def _torch_loss_and_grads(tm, docs, b):
  """Mean -log p over the unmasked labels, each document run alone; loss.backward() gives the gradients."""
  tm.zero_grad()
  nll, count = torch.zeros((), dtype=torch.float64), 0
  for r, row in enumerate(docs):
    start = 0
    for d in row:
      n = len(d)
      logits = tm(torch.tensor(d[None], dtype=torch.long)).logits[0, :-1]
      lp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(d[1:, None], dtype=torch.long))[:, 0]
      m = torch.tensor(b["loss_mask"][r, start:start + n - 1])
      nll = nll - (lp * m).sum().double()
      count += int(m.sum())
      start += n
  loss = nll / count
  loss.backward()
  return loss.item(), count, {name: p.grad.numpy() for name, p in tm.named_parameters()}


def _keep_gradient():
  """An optimizer that changes nothing and keeps the gradient it was given as its state."""
  return optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p),
                                      lambda g, s, p=None: (jax.tree.map(jnp.zeros_like, g), g))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lm_step_loss_and_gradient_match_torch(arch):
  cfg = preset(f"tiny-{arch}", vocab_size=V)
  tm = torch_model(cfg, seed=4)
  docs, b = _docs_and_batch()
  want_loss, want_count, want = _torch_loss_and_grads(tm, docs, b)
  assert want_count == b["loss_mask"].sum() > 40
  graphdef, state = nnx.split(from_torch_state_dict(cfg, tm.state_dict(), make_mesh(fsdp=1,
                                                                                     devices=jax.devices()[:1])))
  params = nnx.to_pure_dict(state)
  tx = _keep_gradient()
  for micro, fused in ((1, True), (2, True), (1, False)):  # fused: the gradient formed in the loss's forward pass
    step = jax.jit(lm.make_train_step(graphdef, tx, micro_batches=micro, loss_chunk=8, fused_loss=fused))
    new, grads, m = step(params, tx.init(params), {k: jnp.asarray(v) for k, v in b.items()}, 0)
    assert m["finite"] == 1 and m["count"] == want_count
    np.testing.assert_allclose(float(m["loss"]), want_loss, rtol=1e-6)  # measured 1.2e-7
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), new, params)
    seen = set()
    for path, g in flat_params(grads).items():
      name, transpose = to_hf_name(path)
      g = np.asarray(g).T if transpose else np.asarray(g)
      ref = want[name]
      head = g[tuple(slice(0, s) for s in ref.shape)]
      assert not np.any(np.delete(g, np.s_[:ref.shape[0]], axis=0)), name  # padded vocabulary rows: no gradient
      # measured at most 3e-6 of the leaf's largest entry (qwen2's k_proj bias, whose gradient is small); 1e-6 typical
      np.testing.assert_allclose(head, ref, rtol=0, atol=1e-5 * np.abs(ref).max(), err_msg=f"{name} {micro=} {fused=}")
      seen.add(name)
    assert seen == set(want)
