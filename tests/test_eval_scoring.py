"""Scores equal log-probabilities computed independently with transformers; bucketing changes nothing."""
import numpy as np
import pytest

from slm_jax import sharding
from slm_jax.eval.scoring import Scorer, modality_banned, pair_outcomes, plan_buckets
from slm_jax.model.config import preset
from slm_jax.vocab import VocabLayout
from test_eval_helpers import jax_model, torch_logprobs, torch_model


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_scores_match_transformers_and_buckets_agree(arch):
  cfg = preset(f"tiny-{arch}", vocab_size=1000)  # padded to 1024: padded rows must stay out of the softmax
  tm = torch_model(cfg, seed=1)
  mesh = sharding.make_mesh(data=2, fsdp=4)
  scorer = Scorer(jax_model(cfg, tm, mesh), mesh, tokens_per_batch=256, max_buckets=2)
  rng = np.random.RandomState(0)
  seqs = [rng.randint(0, 1000, n) for n in (2, 3, 7, 8, 9, 15, 16, 17, 30, 41, 5, 12, 26)]
  layout = VocabLayout(base_size=400, num_units=500)  # units 400..899, markers 900, 901
  banned = modality_banned(layout, cfg.padded_vocab_size, "speech") if arch == "llama" else None

  res = scorer.score(seqs, reduce="mean", banned=banned, keep_tokens=True)
  assert res.buckets == [16, 40]  # 41 tokens -> 40 targets; the DP's best split of the rounded lengths
  for s, got, mean in zip(seqs, res.token_logprobs, res.scores):
    ref = torch_logprobs(tm, s, banned)
    if banned is not None:  # targets outside the kept modality have -inf under the mask; compare the others
      ok = ~banned[s[1:]]
      np.testing.assert_array_less(got[~ok], -1e8)
      got, ref = got[ok], ref[ok]
    else:
      assert mean == pytest.approx(ref.mean(), abs=5e-6)  # measured 7.9e-7
    np.testing.assert_allclose(got, ref, rtol=0, atol=3e-5)  # measured 7.8e-6 on log-probs down to -15

  def same(other):  # token by token (llama's sums are dominated by the banned targets' -1e9)
    np.testing.assert_allclose(other.scores, res.sums, rtol=1e-6)  # measured 6.5e-8
    for a, b in zip(other.token_logprobs, res.token_logprobs):
      np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)  # measured 3.8e-6

  one = scorer.score(seqs, reduce="sum", banned=banned, buckets=[40], keep_tokens=True)  # a single bucket: no sorting
  same(one)
  assert res.padded_tokens < one.padded_tokens
  # logits of only 8 positions at a time (chunks of 1 position at the larger buckets) change nothing
  small = Scorer(jax_model(cfg, tm, mesh), mesh, tokens_per_batch=256, max_buckets=2, logit_positions=8)
  same(small.score(seqs, reduce="sum", banned=banned, keep_tokens=True))


def test_speech_scoring_with_units_only():
  cfg = preset("tiny-llama", vocab_size=1000)
  tm = torch_model(cfg, seed=2)
  mesh = sharding.make_mesh(fsdp=1, devices=__import__("jax").devices()[:1])
  scorer = Scorer(jax_model(cfg, tm, mesh), mesh, max_buckets=1)
  layout = VocabLayout(base_size=400, num_units=500, bos_id=3)
  banned = modality_banned(layout, cfg.padded_vocab_size, "speech")
  rng = np.random.RandomState(3)
  seqs = [np.concatenate([[3], rng.randint(0, 500, n) + 400]) for n in (4, 9, 19)]  # BOS + bare units
  res = scorer.score(seqs, reduce="mean", banned=banned)
  for s, got in zip(seqs, res.scores):
    assert got == pytest.approx(torch_logprobs(tm, s, banned).mean(), abs=5e-6)  # measured 5.5e-7
  with pytest.raises(ValueError, match="sequence 0: needs at least 2 tokens"):
    scorer.score([np.array([3])])
  with pytest.raises(ValueError, match="x.wav: token ids .* outside the model vocabulary"):
    scorer.score([np.array([3, 1000])], names=["x.wav"])


def test_modality_banned_counts():
  lay = VocabLayout(base_size=100, num_units=10, bos_id=1, eos_id=2)  # units 100..109, markers 110, 111
  sp = modality_banned(lay, 128, "speech")
  assert np.flatnonzero(~sp).tolist() == list(range(100, 110))
  tx = modality_banned(lay, 128, "text")
  assert np.flatnonzero(tx).tolist() == list(range(100, 110))  # markers stay allowed when scoring text
  gen = modality_banned(lay, 128, "text", ban_markers=True)
  assert gen[110] and gen[111] and not gen[2]
  assert not modality_banned(lay, 128, "speech", allow=[2])[2]
  assert modality_banned(lay, 128, None) is None


def test_plan_buckets_is_optimal():
  assert plan_buckets([3, 3, 3, 10, 10, 50], max_buckets=2, granule=1) == [10, 50]  # 100 padded tokens
  assert plan_buckets([3, 3, 3, 10, 10, 50], max_buckets=3, granule=1) == [3, 10, 50]
  assert plan_buckets([1, 9, 17], max_buckets=8, granule=8) == [8, 16, 24]
  assert plan_buckets([5] * 10, max_buckets=4) == [8]
  # brute force over all bucket choices on random lengths
  rng = np.random.RandomState(0)
  lens = rng.randint(1, 60, 40)
  got = plan_buckets(lens, max_buckets=3, granule=4)
  cost = lambda b: sum(min(x for x in b if x >= -(-n // 4) * 4) for n in lens)  # noqa: E731
  sizes = sorted(set(-(-lens // 4) * 4))
  import itertools
  best = min(cost(list(c) + [sizes[-1]]) for k in range(3) for c in itertools.combinations(sizes[:-1], k))
  assert cost(got) == best


def test_pair_outcomes_ties():
  assert pair_outcomes([1.0, -2.0, 0.5], [0.5, -2.0, 0.7]).tolist() == [1.0, 0.5, 0.0]
