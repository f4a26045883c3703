"""The extraction driver and tool: frame counts, real audio end to end, reruns, bad files, host shares."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from slm_jax.units import audio as audio_lib
from slm_jax.units import extract
from slm_jax.units.mfcc import MfccEncoder
from xla_env import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records(path):
  return list(extract.iter_features(path))


def test_mfcc_frame_counts_match_the_real_mhubert_units(slamkit_example, tmp_path):
  """The stand-in frames exactly as mHuBERT-25Hz did for slamkit's two clips (352 and 398 frames)."""
  with open(os.path.join(slamkit_example, "features.jsonl")) as f:
    real = {os.path.basename(r["file_name"]): sum(r["duration"]) for r in map(json.loads, f)}
  paths = [os.path.join(slamkit_example, "audio", n) for n in sorted(real)]
  centroids = np.random.default_rng(0).standard_normal((50, MfccEncoder.dim)).astype(np.float32) * 50
  out = str(tmp_path / "f.jsonl")
  stats = extract.extract_files(paths, MfccEncoder(), centroids, out, progress=False)
  assert stats.files == 2 and not stats.bad
  got = {os.path.basename(r["file_name"]): sum(r["duration"]) for r in _records(out)}
  assert got == real == {"audio1.flac": 352, "audio2.flac": 398}
  for r in _records(out):
    assert len(r["units"]) == len(r["duration"]) and min(r["duration"]) >= 1
    assert all(a != b for a, b in zip(r["units"], r["units"][1:]))  # deduplicated


def test_librivox_end_to_end_with_fitted_kmeans_rerun_and_shards(librivox_dir, tmp_path):
  km = str(tmp_path / "km.npy")
  cfg = extract.RunConfig(audio_dir=librivox_dir, out=str(tmp_path / "u.jsonl"), ext="wav", encoder="mfcc",
                          kmeans=km, fit_kmeans=40, progress=False)
  stats = extract.run(cfg)
  wavs = audio_lib.find_audio(librivox_dir, "wav")
  assert stats.files == len(wavs) == 5 and stats.audio_seconds > 10
  recs = {r["file_name"]: r for r in _records(cfg.out)}
  assert set(recs) == set(wavs)
  for p, r in recs.items():
    n = len(audio_lib.load_audio(p))
    assert sum(r["duration"]) == audio_lib.num_frames(n) == n // 640  # 25 Hz, 40-sample edge padding
    assert 0 <= min(r["units"]) and max(r["units"]) < 40
  assert np.load(km).shape == (40, MfccEncoder.dim)
  again = extract.run(dataclasses_replace(cfg, fit_kmeans=0))  # rerun: nothing to do
  assert again.files == 0 and again.skipped_done == 5
  # two "hosts": disjoint shares, same units as the single run
  shards = []
  for i in range(2):
    extract.run(dataclasses_replace(cfg, fit_kmeans=0, out=str(tmp_path / "s.jsonl"), process_index=i,
                                    process_count=2))
    shards.append(_records(str(tmp_path / f"s-0000{i}-of-00002.jsonl")))
  names = [r["file_name"] for s in shards for r in s]
  assert sorted(names) == sorted(recs) and len(set(names)) == len(names)
  assert all(r == recs[r["file_name"]] for s in shards for r in s)


def dataclasses_replace(cfg, **kw):
  import dataclasses
  return dataclasses.replace(cfg, **kw)


def test_unreadable_and_empty_audio_are_skipped_and_counted(librivox_dir, tmp_path):
  d = tmp_path / "a"
  d.mkdir()
  good = sorted(audio_lib.find_audio(librivox_dir, "wav"))[0]
  shutil.copy(good, d / "good.wav")
  (d / "garbage.wav").write_bytes(b"not audio at all")
  sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
  centroids = np.random.default_rng(0).standard_normal((8, MfccEncoder.dim)).astype(np.float32)
  paths = audio_lib.find_audio(str(d), "wav")
  stats = extract.extract_files(paths, MfccEncoder(), centroids, str(tmp_path / "o.jsonl"), progress=False)
  assert stats.files == 1 and sorted(os.path.basename(p) for p, _ in stats.bad) == ["empty.wav", "garbage.wav"]
  assert all(os.path.basename(p) in reason for p, reason in stats.bad)  # reported by path
  with pytest.raises(audio_lib.AudioError, match="empty.wav|garbage.wav"):
    extract.extract_files(paths, MfccEncoder(), centroids, str(tmp_path / "strict.jsonl"), strict=True,
                          progress=False)


def test_torn_last_line_is_dropped_and_redone(tmp_path):
  p = tmp_path / "f.jsonl"
  p.write_text('{"units": [1], "duration": [2], "file_name": "a.wav"}\n{"units": [3], "dur')
  assert extract.read_done(str(p)) == {"a.wav"}
  assert p.read_text().endswith("}\n")


def test_batches_are_longest_first_and_capped():
  lengths = [5, 50, 20, 40, 10]
  batches = extract.plan_batches([f"f{i}" for i in range(5)], lengths, batch_size=2, max_batch_samples=90)
  assert batches == [[1], [3, 2], [4, 0]]  # 50 alone: 2 x 50 > 90


def test_tool_with_a_hf_hubert_folder_and_trusted_joblib(librivox_dir, tmp_path):
  """tools/extract_units.py end to end: a random tiny HubertModel folder, joblib k-means converted to .npy (the
  refusal without --trust_pickled_kmeans is tested in test_units_kmeans), prepared output for the data tools."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  sk = pytest.importorskip("sklearn.cluster")
  import joblib
  k, s = audio_lib.MHUBERT_25HZ_CONV
  cfg = transformers.HubertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                  conv_dim=(8,) * len(k), conv_kernel=k, conv_stride=s, num_conv_pos_embeddings=8,
                                  num_conv_pos_embedding_groups=2)
  torch.manual_seed(0)
  transformers.HubertModel(cfg).save_pretrained(tmp_path / "hub")
  km = sk.KMeans(n_clusters=6, n_init=1, random_state=0).fit(np.random.default_rng(0).standard_normal((100, 16)))
  joblib.dump(km, tmp_path / "km.bin")
  tool = [sys.executable, os.path.join(REPO, "tools", "extract_units.py")]
  env = dict(os.environ, XLA_FLAGS=xla_flags())  # one CPU device, as a user's laptop
  env["JAX_PLATFORMS"] = "cpu"
  r = subprocess.run(tool + [f"--convert_kmeans={tmp_path / 'km.bin'}", f"--kmeans_out={tmp_path / 'km.npy'}",
                             "--trust_pickled_kmeans"], capture_output=True, text=True, env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  r = subprocess.run(tool + [f"--audio_dir={librivox_dir}", "--ext=wav", f"--out={tmp_path / 'u.jsonl'}",
                             f"--encoder={tmp_path / 'hub'}", "--layer=2", f"--kmeans={tmp_path / 'km.npy'}",
                             "--batch_size=2", f"--prepare_dir={tmp_path / 'prep'}"],
                     capture_output=True, text=True, env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "5 files written" in r.stdout and "real time" in r.stdout
  with open(tmp_path / "prep" / "manifest.json") as f:
    assert json.load(f)["counts"]["documents"] == 5  # the prepared (ArrayRecord) form, for the data tools
  recs = _records(str(tmp_path / "u.jsonl"))
  for rec in recs:
    assert sum(rec["duration"]) == len(audio_lib.load_audio(rec["file_name"])) // 640
    assert set(rec["units"]) <= set(range(6))
