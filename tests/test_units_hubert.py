"""Flax HuBERT against transformers' HubertModel (torch) on random small configs saved with save_pretrained."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402

from slm_jax.units import audio as audio_lib  # noqa: E402
from slm_jax.units.encoder import HubertEncoder  # noqa: E402
from slm_jax.units.hubert_import import load_hubert  # noqa: E402

# Tiny models with the real conv layouts: hubert-base (50 Hz, 320 samples/frame) and mhubert-25hz (640).
BASE = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, layer_norm_eps=1e-5)
CONFIGS = {
    "50hz_group_postln": dict(conv_kernel=audio_lib.HUBERT_50HZ_CONV[0], conv_stride=audio_lib.HUBERT_50HZ_CONV[1],
                              feat_extract_norm="group", do_stable_layer_norm=False),
    "25hz_group_postln": dict(conv_kernel=audio_lib.MHUBERT_25HZ_CONV[0], conv_stride=audio_lib.MHUBERT_25HZ_CONV[1],
                              feat_extract_norm="group", do_stable_layer_norm=False),
    "25hz_layer_stable": dict(conv_kernel=audio_lib.MHUBERT_25HZ_CONV[0], conv_stride=audio_lib.MHUBERT_25HZ_CONV[1],
                              feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
    "50hz_layer_postln_oddpos": dict(conv_kernel=audio_lib.HUBERT_50HZ_CONV[0],
                                     conv_stride=audio_lib.HUBERT_50HZ_CONV[1], feat_extract_norm="layer",
                                     do_stable_layer_norm=False, feat_proj_layer_norm=False,
                                     num_conv_pos_embeddings=15),
}


def _make(tmp_path_factory, name):
  kw = dict(BASE, **CONFIGS[name])
  kw["conv_dim"] = (16,) * len(kw["conv_kernel"])
  cfg = transformers.HubertConfig(**kw)
  torch.manual_seed(0)
  model = transformers.HubertModel(cfg).eval()
  with torch.no_grad():  # non-trivial norms and biases, so a mixed-up name cannot pass
    for n, p in model.named_parameters():
      if "norm" in n or n.endswith("bias"):
        p.add_(torch.randn_like(p) * 0.1)
  path = tmp_path_factory.mktemp(name)
  model.save_pretrained(path)
  return model, str(path)


_CACHE = {}


def _pair(tmp_path_factory, name):
  if name not in _CACHE:
    torch_model, path = _make(tmp_path_factory, name)
    _CACHE[name] = (name, torch_model, load_hubert(path))
  return _CACHE[name]


@pytest.fixture(params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
  return _pair(tmp_path_factory, request.param)


@pytest.fixture(params=["25hz_group_postln", "25hz_layer_stable"])
def pair_25hz(request, tmp_path_factory):
  return _pair(tmp_path_factory, request.param)


@pytest.fixture(params=["25hz_layer_stable", "50hz_layer_postln_oddpos"])
def pair_layer(request, tmp_path_factory):
  return _pair(tmp_path_factory, request.param)


@pytest.fixture
def pair_group(tmp_path_factory):
  return _pair(tmp_path_factory, "25hz_group_postln")


def _wav(n, seed):
  return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


def test_every_hidden_state_matches_transformers(pair):
  name, tm, ours = pair
  wav = np.stack([_wav(9600, 0), _wav(9600, 1)])
  with torch.no_grad():
    ref = tm(torch.from_numpy(wav), output_hidden_states=True)
  hidden, last, frames = ours(jax.numpy.asarray(wav), None, all_hidden=True)
  assert len(hidden) == len(ref.hidden_states) == tm.config.num_hidden_layers + 1
  for i, (a, b) in enumerate(zip(hidden, ref.hidden_states)):
    np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-4, rtol=0, err_msg=f"{name} hidden_states[{i}]")
  np.testing.assert_allclose(np.asarray(last), ref.last_hidden_state.numpy(), atol=1e-4, rtol=0)
  hop = int(np.prod(tm.config.conv_stride))
  assert hidden[0].shape[1] == int(audio_lib.conv_out_length(9600, tm.config.conv_kernel, tm.config.conv_stride))
  assert hop in (320, 640)


def test_masked_batch_matches_transformers_with_attention_mask(pair_layer):
  """For the LayerNorm feature extractor HF's attention_mask path is exact: ours must agree on valid frames
  (HF's group-norm models are not padding-invariant under attention_mask; see the next test for ours)."""
  name, tm, ours = pair_layer
  lens = np.array([9600, 5000])
  wav = np.zeros((2, 9600), np.float32)
  wav[0], wav[1, :5000] = _wav(9600, 2), _wav(5000, 3)
  mask = (np.arange(9600)[None] < lens[:, None]).astype(np.int64)
  with torch.no_grad():
    ref = tm(torch.from_numpy(wav), attention_mask=torch.from_numpy(mask), output_hidden_states=True)
  hidden, _, frames = ours(jax.numpy.asarray(wav), jax.numpy.asarray(lens), all_hidden=True)
  for i, (a, b) in enumerate(zip(hidden, ref.hidden_states)):
    for r in range(2):
      n = int(frames[r])
      np.testing.assert_allclose(np.asarray(a)[r, :n], b.numpy()[r, :n], atol=1e-4, rtol=0,
                                 err_msg=f"{name} hidden_states[{i}] row {r}")


def test_units_identical_alone_and_batched_with_longer_clips(pair_25hz):
  name, tm, ours = pair_25hz
  # the group-norm model runs data-parallel over all (8 simulated) devices, the other on one
  enc = HubertEncoder(ours, layer=2, devices=None if "group" in name else jax.devices()[:1])
  clips = [_wav(7000, 4), _wav(30000, 5)]
  batched, frames_b = enc.encode_batch(clips)
  centroids = np.random.default_rng(7).standard_normal((20, 32)).astype(np.float32)
  from slm_jax.units import kmeans
  units_b = np.asarray(kmeans.assign(batched, centroids))
  for i, clip in enumerate(clips):
    alone, frames_a = enc.encode_batch([clip])  # alone (padded with filler rows to the device count)
    assert frames_a[0] == frames_b[i] == audio_lib.num_frames(len(clip), (tm.config.conv_kernel,
                                                                           tm.config.conv_stride))
    n = int(frames_a[0])
    np.testing.assert_allclose(np.asarray(batched)[i, :n], np.asarray(alone)[0, :n], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(units_b[i, :n], np.asarray(kmeans.assign(alone, centroids))[0, :n])
  # the single clip also equals transformers run on that clip alone (with slamkit's 40-sample edge padding)
  with torch.no_grad():
    ref = tm(torch.nn.functional.pad(torch.from_numpy(clips[0])[None], (40, 40)), output_hidden_states=True)
  n = int(frames_b[0])
  np.testing.assert_allclose(np.asarray(batched)[0, :n], ref.hidden_states[2].numpy()[0], atol=1e-4, rtol=0)


def test_slamkit_padding_reproduces_unmasked_batches(pair_group):
  """slamkit: pad the batch to its longest clip, then 40 zeros both sides, no mask, keep ceil(len/max*T)."""
  name, tm, ours = pair_group
  clips = [_wav(30000, 8), _wav(7000, 9)]
  enc = HubertEncoder(ours, layer=3, slamkit_padding=True, devices=jax.devices()[:1])
  feats, keep = enc.encode_batch(clips)
  padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(c) for c in clips], batch_first=True)
  with torch.no_grad():
    ref = tm(torch.nn.functional.pad(padded, (40, 40)), output_hidden_states=True).hidden_states[3].numpy()
  t = ref.shape[1]
  np.testing.assert_array_equal(keep, np.ceil(np.array([30000, 7000]) / 30000 * t).astype(int))
  for r in range(2):
    np.testing.assert_allclose(np.asarray(feats)[r, :keep[r]], ref[r, :keep[r]], atol=1e-4, rtol=0)
  # the quirk is real: with group norm the short clip's frames differ from the clip alone
  alone = HubertEncoder(ours, layer=3, devices=jax.devices()[:1]).encode_batch([clips[1]])[0]
  assert np.abs(np.asarray(alone)[0, :keep[1]] - np.asarray(feats)[1, :keep[1]]).max() > 1e-3


def test_mhubert_25hz_frame_counts_match_the_real_units(slamkit_example):
  """slamkit's real mHuBERT units imply 25 Hz with 40-sample edge padding: 352 and 398 frames."""
  import json
  import os
  import soundfile as sf
  with open(os.path.join(slamkit_example, "features.jsonl")) as f:
    totals = {os.path.basename(r["file_name"]): sum(r["duration"]) for r in map(json.loads, f)}
  assert totals == {"audio1.flac": 352, "audio2.flac": 398}
  for name, total in totals.items():
    n = sf.info(os.path.join(slamkit_example, "audio", name)).frames
    assert int(audio_lib.num_frames(n, audio_lib.MHUBERT_25HZ_CONV)) == total
