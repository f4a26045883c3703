"""The NNX decoder against transformers (torch, fp32): logits, rope tables, packing, meshes, KV cache."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers.modeling_rope_utils as rope_utils
from flax import nnx
from jax.sharding import PartitionSpec as P

from hf_tiny import hf_config, torch_model
from slm_jax import sharding
from slm_jax.checkpoint.hf_import import from_torch_state_dict
from slm_jax.checkpoint.weight_map import flat_params, relayout_layers
from slm_jax.model import create_model, init_cache, preset
from slm_jax.model.config import REMAT_POLICIES, ModelConfig
from slm_jax.model.transformer import rope_inv_freq

ONE = lambda: sharding.make_mesh(devices=jax.devices()[:1])  # noqa: E731


def _ref_logits(tm, ids, pos=None):
  with torch.no_grad():
    kw = {} if pos is None else {"position_ids": torch.tensor(pos)}
    return tm(torch.tensor(ids), **kw).logits.numpy()


@pytest.mark.parametrize("arch,kv,tied", [("llama", 1, True), ("llama", 2, False), ("llama", 4, True),
                                          ("qwen2", 2, False), ("qwen2", 1, True), ("qwen2", 4, False)])
def test_logits_match_transformers(arch, kv, tied):
  cfg = preset("tiny-llama" if arch == "llama" else "tiny-qwen2", num_key_value_heads=kv, tie_word_embeddings=tied)
  tm = torch_model(cfg)
  model = from_torch_state_dict(cfg, tm.state_dict(), ONE())
  ids = np.random.RandomState(1).randint(0, cfg.vocab_size, (2, 24))
  ours = np.asarray(model.logits(model(jnp.asarray(ids))))
  assert ours.shape[-1] == cfg.padded_vocab_size
  np.testing.assert_allclose(ours[..., :cfg.vocab_size], _ref_logits(tm, ids), atol=1e-4, rtol=0)


def test_positions_beyond_original_context():
  """llama3 rope scaling only matters far out: positions past 8192 (and past 65536) must still match."""
  cfg = preset("tiny-llama")
  tm = torch_model(cfg, seed=3)
  model = from_torch_state_dict(cfg, tm.state_dict(), ONE())
  ids = np.random.RandomState(2).randint(0, cfg.vocab_size, (2, 16))
  pos = np.stack([np.arange(16) + 9000, np.arange(16) + 70000])
  ours = np.asarray(model.logits(model(jnp.asarray(ids), jnp.asarray(pos))))
  np.testing.assert_allclose(ours[..., :cfg.vocab_size], _ref_logits(tm, ids, pos), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["llama3.2-3b", "tiny-llama", "qwen2.5-7b"])
def test_rope_table_matches_transformers(name):
  cfg = preset(name)
  hf = hf_config(cfg)
  rope_type = "llama3" if cfg.rope_scaling else "default"
  if rope_type == "default":
    ref = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2) / cfg.head_dim))
  else:
    ref = rope_utils.ROPE_INIT_FUNCTIONS[rope_type](hf, "cpu")[0].numpy()
  np.testing.assert_allclose(rope_inv_freq(cfg), ref, rtol=1e-6)


def test_packed_row_equals_separate_documents():
  cfg = preset("tiny-qwen2")
  model = create_model(cfg, ONE(), seed=4)
  rng = np.random.RandomState(5)
  a, b = rng.randint(0, 1000, 11), rng.randint(0, 1000, 9)
  packed = np.concatenate([a, b, [0, 0, 0, 0]])[None]
  seg = np.array([[1] * 11 + [2] * 9 + [0] * 4])
  pos = np.array([list(range(11)) + list(range(9)) + list(range(4))])
  out = np.asarray(model.logits(model(jnp.asarray(packed), jnp.asarray(pos), jnp.asarray(seg))))
  ra = np.asarray(model.logits(model(jnp.asarray(a[None]))))
  rb = np.asarray(model.logits(model(jnp.asarray(b[None]))))
  np.testing.assert_allclose(out[0, :11], ra[0], atol=1e-5)
  np.testing.assert_allclose(out[0, 11:20], rb[0], atol=1e-5)
  assert np.isfinite(out).all()


def test_padded_vocab_rows_never_win():
  cfg = preset("tiny-llama", vocab_size=1000)
  assert cfg.padded_vocab_size == 1024
  model = create_model(cfg, ONE(), seed=0)
  emb = model.model.embed_tokens.embedding
  emb[...] = emb[...].at[1000:].set(100.0)  # even huge padded rows must not win
  logits = np.asarray(model.logits(model(jnp.zeros((1, 5), jnp.int32))))
  assert (logits.argmax(-1) < 1000).all()


@pytest.mark.parametrize("axes", [dict(fsdp=8), dict(data=2, fsdp=4), dict(fsdp=2, tensor=4)])
def test_meshes_give_single_device_logits(axes):
  assert jax.device_count() == 8
  cfg = preset("tiny-llama", hidden_size=128, intermediate_size=256, num_attention_heads=8,
               num_key_value_heads=4)
  ref_model = create_model(cfg, ONE(), seed=7)
  ids = jnp.asarray(np.random.RandomState(8).randint(0, 1000, (8, 16)))
  seg = jnp.asarray(np.repeat([[1] * 10 + [2] * 6], 8, 0))
  pos = jnp.asarray(np.repeat([list(range(10)) + list(range(6))], 8, 0))
  ref = np.asarray(ref_model.logits(ref_model(ids, pos, seg)))
  mesh = sharding.make_mesh(**axes)
  model = create_model(cfg, mesh, seed=7)
  kernel = model.model.layers[0].mlp.gate_proj.kernel[...]
  assert len(kernel.sharding.device_set) == 8 and not kernel.sharding.is_fully_replicated
  graphdef, state = nnx.split(model)

  @jax.jit
  def fwd(state, ids, pos, seg):
    m = nnx.merge(graphdef, state)
    return m.logits(m(ids, pos, seg))

  with jax.set_mesh(mesh):
    out = np.asarray(fwd(state, ids, pos, seg))
  np.testing.assert_allclose(out, ref, atol=2e-5)


def test_describe_flags_replicated_large_params():
  cfg = preset("tiny-llama")
  mesh = sharding.make_mesh(fsdp=8)
  model = create_model(cfg, mesh)
  rows = sharding.describe(nnx.state(model, nnx.Param), min_replicated_size=1 << 12, print_fn=lambda s: None)
  specs = dict((r[0], r[2]) for r in rows)
  assert specs["model.embed_tokens.embedding"] == jax.sharding.PartitionSpec(None, "fsdp")
  replicated = jax.device_put(np.zeros((256, 64), np.float32),
                              jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  with pytest.raises(ValueError, match="fully replicated: big"):
    sharding.describe({"big": replicated}, min_replicated_size=1000, print_fn=lambda s: None)


def test_make_mesh_fills_and_checks():
  assert dict(sharding.make_mesh(data=2, fsdp=-1).shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  assert dict(sharding.make_mesh(fsdp=1, tensor=-1).shape) == {"data": 1, "fsdp": 1, "tensor": 8}
  with pytest.raises(ValueError, match="at most one"):
    sharding.make_mesh(data=-1, fsdp=-1)
  with pytest.raises(ValueError, match="needs 6 devices"):
    sharding.make_mesh(data=3, fsdp=2, tensor=1)


@pytest.mark.parametrize("scan", [False, True])
def test_kv_cache_prefill_and_decode_equal_full_forward(scan):
  """Prefill then one-token steps against the cache equal the full forward, with layers per layer or stacked."""
  cfg = preset("tiny-llama", scan_layers=scan)
  model = create_model(cfg, ONE(), seed=9)
  ids = jnp.asarray(np.random.RandomState(10).randint(0, 1000, (2, 12)))
  full = np.asarray(model.logits(model(ids)))
  cache = init_cache(cfg, 2, 16)
  pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
  h1, cache = model.decode(ids[:, :8], cache, pos[:, :8], jnp.ones((2, 8), jnp.int32))
  outs = [np.asarray(model.logits(h1))]
  for t in range(8, 12):
    h, cache = model.decode(ids[:, t:t + 1], cache, pos[:, t:t + 1], jnp.ones((2, 1), jnp.int32))
    outs.append(np.asarray(model.logits(h)))
  np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=1e-5)


def test_config_round_trips_hf_json_both_rope_layouts():
  cfg = preset("llama3.2-3b")
  assert ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg.replace(max_position_embeddings=131072)
  v4 = {k: v for k, v in cfg.to_hf_dict().items() if k != "rope_parameters"}
  v4.update(rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
  assert ModelConfig.from_hf_dict(v4) == cfg
  assert cfg.num_params() == 3_212_749_824  # docs/reference.md §5
  with pytest.raises(ValueError, match="unsupported model_type 'gpt2'"):
    ModelConfig.from_hf_dict({"model_type": "gpt2"})


def test_cudnn_attention_needs_half_precision():
  with pytest.raises(ValueError, match="cuDNN flash attention has no fp32 kernel"):
    preset("tiny-llama", attention_impl="cudnn", dtype="float32")
  assert preset("tiny-llama", attention_impl="cudnn", dtype="bfloat16").attention_impl == "cudnn"


def _loss_and_grads(model, ids, pos, seg):
  """Loss (std of the logits) and its parameter gradients as a pure dict with the layers per layer."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def f(p):
    m = nnx.merge(graphdef, p, rest)
    return m.logits(m(ids, pos, seg)).astype(jnp.float32).std()

  loss, grads = jax.jit(jax.value_and_grad(f))(params)
  return loss, relayout_layers(nnx.to_pure_dict(grads), stacked=False)


@pytest.mark.parametrize("remat,policy", [(False, "nothing_saveable"), (True, "nothing_saveable"),
                                          (True, "dots_saveable"), (True, "save_qkv_attention")])
def test_scanned_layers_equal_the_layer_loop(remat, policy):
  """scan_layers: parameters stored stacked [L, ...] with the same values as the loop model of the same seed, the
  same logits and parameter gradients (optionally rematerialised), one 'layers' axis unsharded on a mesh."""
  cfg = preset("tiny-llama", num_hidden_layers=3)
  ref = create_model(cfg, ONE(), seed=11)
  scanned = create_model(cfg.replace(scan_layers=True, remat=remat, remat_policy=policy), ONE(), seed=11)
  kernel = scanned.model.layers.self_attn.q_proj.kernel
  assert kernel.shape == (3, 64, 64) and kernel.get_metadata("logical_axes") == ("layers", "embed", "q_heads")
  flat = flat_params(scanned)
  assert "model.layers.mlp.up_proj.kernel" in flat and not any(k.startswith("model.layers.0.") for k in flat)
  for a, b in zip(jax.tree.leaves(nnx.to_pure_dict(nnx.state(ref, nnx.Param))),
                  jax.tree.leaves(relayout_layers(nnx.to_pure_dict(nnx.state(scanned, nnx.Param)), False))):
    np.testing.assert_array_equal(a, b)
  ids = jnp.asarray(np.random.RandomState(12).randint(0, 1000, (2, 10)))
  seg = jnp.asarray([[1] * 6 + [2] * 4] * 2)
  pos = jnp.asarray([list(range(6)) + list(range(4))] * 2)
  (l0, g0), (l1, g1) = _loss_and_grads(ref, ids, pos, seg), _loss_and_grads(scanned, ids, pos, seg)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  assert jax.tree.structure(g0) == jax.tree.structure(g1)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(b, a, atol=1e-7, rtol=1e-4)
  np.testing.assert_allclose(scanned.logits(scanned(ids, pos, seg)), ref.logits(ref(ids, pos, seg)), atol=1e-5)
  mesh = sharding.make_mesh(fsdp=2, tensor=4)
  sharded = create_model(cfg.replace(scan_layers=True), mesh, seed=11)
  assert sharded.model.layers.mlp.up_proj.kernel[...].sharding.spec == P(None, "fsdp", "tensor")


@pytest.mark.parametrize("scan", [False, True])
def test_remat_policies_keep_loss_and_grads(scan):
  """Every remat policy, in the layer loop and in the scanned layers, gives the loss and gradients of no remat."""
  cfg = preset("tiny-qwen2", num_hidden_layers=2, scan_layers=scan)
  ids = jnp.asarray(np.random.RandomState(3).randint(0, 1000, (2, 12)))
  seg = jnp.asarray([[1] * 7 + [2] * 5] * 2)
  pos = jnp.asarray([list(range(7)) + list(range(5))] * 2)
  l0, g0 = _loss_and_grads(create_model(cfg, ONE(), seed=4), ids, pos, seg)
  for policy in REMAT_POLICIES:
    model = create_model(cfg.replace(remat=True, remat_policy=policy), ONE(), seed=4)
    l1, g1 = _loss_and_grads(model, ids, pos, seg)
    np.testing.assert_allclose(l1, l0, rtol=1e-6, err_msg=policy)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
      np.testing.assert_allclose(b, a, atol=1e-7, rtol=1e-4, err_msg=policy)


def test_remat_policy_is_checked():
  with pytest.raises(ValueError, match="remat_policy must be one of nothing_saveable, .*dots_saveable.*got 'minimal'"):
    preset("tiny-llama", remat=True, remat_policy="minimal")


# ---------------------------------------------------------------- splash attention (Pallas, interpret mode on CPU)

def _qkv(B=2, T=128, N=4, K=2, H=16):
  r = np.random.default_rng(0)
  q, k, v = (jnp.asarray(r.standard_normal((B, T, n, H)), jnp.float32) for n in (N, K, K))
  seg = np.ones((B, T), np.int32)
  seg[0, 40:] = 2          # two documents
  seg[1, 30:90] = 2        # two documents, then padding (segment 0)
  seg[1, 90:] = 0
  return q, k, v, jnp.asarray(seg)


def _rel(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def test_splash_attention_equals_xla_causal_and_packed():
  from slm_jax.model.transformer import attention
  q, k, v, seg = _qkv()
  T = q.shape[1]
  packed = jnp.tril(jnp.ones((T, T), bool))[None] & (seg[:, :, None] == seg[:, None, :])
  for mask, segments, causal in ((None, None, True), (packed, seg, False)):
    ref_fn = lambda q, k, v: attention(q, k, v, mask, "xla", causal)  # noqa: B023
    got_fn = lambda q, k, v: attention(q, k, v, segments, "splash", causal)  # noqa: B023
    assert _rel(got_fn(q, k, v), ref_fn(q, k, v)) <= 1e-5
    loss = lambda f: lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v)))  # noqa: E731
    for g, r in zip(jax.grad(loss(got_fn), (0, 1, 2))(q, k, v), jax.grad(loss(ref_fn), (0, 1, 2))(q, k, v)):
      assert _rel(g, r) <= 1e-5


def test_splash_sharded_over_rows_and_heads_and_in_the_model():
  """shard_map over (fsdp rows, tensor heads) gives the single-device values; the model with splash gives the
  XLA path's logits on a packed batch."""
  from slm_jax.model.transformer import attention
  q, k, v, seg = _qkv()
  single = attention(q, k, v, seg, "splash", False)
  mesh = sharding.make_mesh(fsdp=2, tensor=2, devices=jax.devices()[:4])
  with jax.set_mesh(mesh):
    sharded = jax.jit(lambda *a: attention(*a, "splash", False))(q, k, v, seg)
  assert _rel(sharded, single) <= 1e-6
  cfg = preset("tiny-llama", attention_impl="xla")
  ref = create_model(cfg, ONE(), seed=0)
  model = nnx.merge(nnx.graphdef(create_model(cfg.replace(attention_impl="splash"), ONE(), seed=0)),
                    nnx.state(ref))
  ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, seg.shape))
  pos = jnp.asarray(np.concatenate([np.arange(40), np.arange(88)])[None].repeat(2, 0), jnp.int32)
  assert _rel(model.logits(model(ids, pos, seg)), ref.logits(ref(ids, pos, seg))) <= 1e-5


def test_auto_attention_is_xla_on_cpu_and_splash_needs_length_multiple_of_128():
  from slm_jax.model.transformer import resolve_attention_impl
  assert resolve_attention_impl("auto", "bfloat16") == "xla"  # tests run on CPU
  assert resolve_attention_impl("cudnn", "bfloat16") == "cudnn"
  q, k, v, seg = _qkv(T=96)
  with pytest.raises(ValueError, match="multiple of 128"):
    from slm_jax.model.splash import splash_attention
    splash_attention(q, k, v, seg)


@pytest.mark.parametrize("T", [64, 100])
def test_blocked_causal_xla_attention_equals_full(T):
  """The XLA path computes causal self-attention in query blocks over the keys up to each block's end; values and
  gradients equal the one-block computation (causal and packed masks, T not a multiple of the block)."""
  from slm_jax.model import transformer as tr
  r = np.random.default_rng(T)
  B, N, K, H = 2, 4, 2, 16
  q, k, v = (jnp.asarray(r.normal(size=(B, T, n, H)), jnp.float32) for n in (N, K, K))
  seg = jnp.asarray(np.sort(r.integers(0, 3, (B, T)), axis=1)[:, ::-1].copy())  # documents, then padding (0)
  packed = jnp.tril(jnp.ones((T, T), bool))[None] & (seg[:, :, None] == seg[:, None, :])
  assert T >= 2 * tr.MIN_ATTENTION_BLOCK
  for mask, causal_only in ((None, True), (packed, False)):
    assert_blocked_attention_equals_full(q, k, v, mask, causal_only, True)


def assert_blocked_attention_equals_full(q, k, v, mask, causal_only, causal):
  """The XLA attention with `causal` (True or a `Branches` layout: computed in query blocks) gives the values and
  gradients of the one-block computation under the same mask."""
  from slm_jax.model import transformer as tr
  blocked = lambda q, k, v: tr.attention(q, k, v, mask, "xla", causal_only, causal=causal)  # noqa: E731
  full = lambda q, k, v: tr.attention(q, k, v, mask, "xla", causal_only, causal=False)  # noqa: E731
  np.testing.assert_allclose(jax.jit(blocked)(q, k, v), jax.jit(full)(q, k, v), atol=1e-6, rtol=1e-5)
  grads = lambda f: jax.jit(jax.grad(lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v))), (0, 1, 2)))  # noqa: E731
  for g, ref in zip(grads(blocked)(q, k, v), grads(full)(q, k, v)):
    np.testing.assert_allclose(g, ref, atol=1e-5, rtol=1e-4)


def test_long_packed_rows_match_transformers():
  """At lengths where the blocked causal attention is on, a packed row still equals transformers run on each
  document alone."""
  cfg = preset("tiny-llama", num_key_value_heads=2)
  tm = torch_model(cfg)
  model = from_torch_state_dict(cfg, tm.state_dict(), ONE())
  r = np.random.RandomState(3)
  docs = [r.randint(0, cfg.vocab_size, n) for n in (70, 45, 45)]  # 160 tokens: five 32-token query blocks
  ids = np.concatenate(docs)[None]
  seg = np.concatenate([np.full(len(d), i + 1) for i, d in enumerate(docs)])[None]
  pos = np.concatenate([np.arange(len(d)) for d in docs])[None]
  ours = np.asarray(model.logits(model(jnp.asarray(ids), jnp.asarray(pos), jnp.asarray(seg))))[0, :, :cfg.vocab_size]
  ref = np.concatenate([_ref_logits(tm, d[None])[0] for d in docs])
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
