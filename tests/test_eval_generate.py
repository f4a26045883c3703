"""KV-cache decoding == full recompute == transformers' greedy generate; sampling filters; banned ids."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from slm_jax import sharding
from slm_jax.eval.generate import Generator, SamplingConfig, cut_units, output_banned, process_logits
from slm_jax.eval.scoring import modality_banned
from slm_jax.model.config import preset
from slm_jax.vocab import VocabLayout
from test_eval_helpers import jax_model, torch_model

N_NEW = 10


def _full_recompute_greedy(model, mesh, prompt, n):
  """Greedy without a cache: the whole sequence is run again for every new token (one compile, right padding)."""
  T = len(prompt) + n
  fn = jax.jit(lambda ids, last: jnp.argmax(model.logits(model(ids)[0, last]), -1))
  seq = list(prompt)
  with jax.set_mesh(mesh):
    for _ in range(n):
      ids = np.zeros((1, T), np.int32)
      ids[0, :len(seq)] = seq
      seq.append(int(fn(ids, len(seq) - 1)))
  return seq[len(prompt):]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_kv_cache_greedy_matches_full_recompute_and_transformers(arch):
  cfg = preset(f"tiny-{arch}")
  tm = torch_model(cfg, seed=3)
  tm.generation_config.eos_token_id = None
  tm.generation_config.pad_token_id = 0
  mesh = sharding.make_mesh(data=2, fsdp=2, devices=jax.devices()[:4])
  model = jax_model(cfg, tm, mesh)
  rng = np.random.RandomState(1)
  prompts = [rng.randint(0, cfg.vocab_size, n) for n in (6, 1, 11)]  # different lengths in one batch
  out = Generator(model, mesh).generate(prompts, SamplingConfig(max_new_tokens=N_NEW, greedy=True))
  for p, got in zip(prompts, out.tokens):
    with torch.no_grad():
      ref = tm.generate(torch.tensor(p[None]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                        max_new_tokens=N_NEW, do_sample=False)[0, len(p):].numpy()
    assert got.tolist() == ref.tolist()
    if arch == "llama":
      assert got.tolist() == _full_recompute_greedy(model, mesh, p, N_NEW)
    assert len(set(got.tolist())) > 2  # a lively model: not one token repeated
  assert not out.stopped.any() and out.new_tokens == 3 * N_NEW


def test_banned_never_sampled_and_eos_stops():
  layout = VocabLayout(base_size=400, num_units=500, bos_id=1, eos_id=2)  # units 400..899
  cfg = preset("tiny-llama", vocab_size=layout.size)
  tm = torch_model(cfg, seed=4)
  mesh = sharding.make_mesh(fsdp=1, devices=jax.devices()[:1])
  model = jax_model(cfg, tm, mesh)
  gen = Generator(model, mesh)  # the ban leaves 500 of 1024 ids: the head runs on those columns only
  full = Generator(model, mesh, restrict_vocab=False)  # the whole head, banned logits at -inf
  rng = np.random.RandomState(2)
  prompts = [np.concatenate([[1], rng.randint(0, 400, n)]) for n in (3, 8, 5, 2)]  # text prompts
  banned = modality_banned(layout, cfg.padded_vocab_size, "speech")
  sc = SamplingConfig(max_new_tokens=40, temperature=2.0, top_k=0)
  for g in (gen, full):
    toks = np.concatenate(g.generate(prompts, sc, banned=banned, seed=7).tokens)
    assert toks.size == 160 and ((toks >= 400) & (toks < 900)).all()
    assert len(set(toks.tolist())) > 40  # really sampled
  # both heads give the same greedy tokens
  greedy = SamplingConfig(max_new_tokens=12, greedy=True)
  assert [t.tolist() for t in gen.generate(prompts, greedy, banned=banned).tokens] == [
      t.tolist() for t in full.generate(prompts, greedy, banned=banned).tokens]
  # EOS: allowed and forced by banning everything else -> every row stops at once with no tokens
  only_eos = np.ones(cfg.padded_vocab_size, bool)
  only_eos[2] = False
  out = full.generate(prompts, sc, banned=only_eos, eos_ids=[2])
  assert out.stopped.all() and all(len(t) == 0 for t in out.tokens) and out.new_tokens == 4
  # a seed fixes the samples
  a = gen.generate(prompts, sc, banned=banned, seed=11).tokens
  b = gen.generate(prompts, sc, banned=banned, seed=11).tokens
  assert all((x == y).all() for x, y in zip(a, b))


def test_kth_largest_is_exact():
  from slm_jax.eval.generate import kth_largest
  x = np.random.RandomState(0).randn(4, 3000).astype(np.float32)
  x[0, :5] = [np.inf, -np.inf, 0.0, -0.0, 3.0]
  x[1] = -np.abs(x[1])
  for k in (1, 2, 25, 3000):
    np.testing.assert_array_equal(np.asarray(kth_largest(jnp.asarray(x), k)), -np.sort(-x, axis=1)[:, k - 1])


def test_logit_filters_match_transformers():
  from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                      TopKLogitsWarper, TopPLogitsWarper)
  rng = np.random.RandomState(0)
  logits = rng.randn(3, 50).astype(np.float32) * 3
  seen_ids = rng.randint(0, 50, (3, 7))
  seen = np.zeros((3, 50), bool)
  np.put_along_axis(seen, seen_ids, True, axis=1)
  sc = SamplingConfig(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.3)
  got = np.asarray(process_logits(jnp.asarray(logits), sc, seen=jnp.asarray(seen)))
  t = torch.tensor(logits)
  ids = torch.tensor(seen_ids)
  for proc in (RepetitionPenaltyLogitsProcessor(1.3), TemperatureLogitsWarper(0.7), TopKLogitsWarper(20),
               TopPLogitsWarper(0.8)):
    t = proc(ids, t)
  ref = t.numpy()
  kept = np.isfinite(ref)
  assert ((got > -1e8) == kept).all()
  np.testing.assert_allclose(got[kept], ref[kept], rtol=1e-6)


def test_cut_units_to_seconds():
  units, dur = [7, 8, 9, 10], [25, 25, 26, 10]  # ends at 1.0 s, 2.0 s, 3.04 s, 3.44 s
  assert cut_units(units, dur, 3.0).tolist() == [7, 8]
  assert cut_units(units, dur, None).tolist() == units
  with pytest.raises(ValueError, match="needs the 'duration'"):
    cut_units(units, None, 3.0)


def test_output_bans():
  lay = VocabLayout(base_size=100, num_units=10, bos_id=1, eos_id=2)  # units 100..109, markers 110, 111
  text = output_banned(lay, 128, "text", allow_eos=False)
  assert text[100:112].all() and text[2] and not text[5] and text[112:].sum() == 0
  assert not output_banned(lay, 128, "text", allow_eos=True)[2]
  speech = output_banned(lay, 128, "speech", allow_eos=True)
  assert np.flatnonzero(~speech).tolist() == [2] + list(range(100, 110))
