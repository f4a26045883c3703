"""Audio input: units extracted through slm_jax.units (stand-in MFCC encoder) equal the extractor's own output."""
import numpy as np
import pytest
import soundfile as sf

from slm_jax.eval import benchmarks as bm
from slm_jax.eval import run
from slm_jax.eval.inputs import make_audio_units
from slm_jax.units import audio as audio_lib
from slm_jax.units import dedup as dedup_lib
from slm_jax.units import extract as extract_lib
from slm_jax.units.mfcc import MfccEncoder


def _wav(path, seconds, freq, seed):
  t = np.arange(int(seconds * 16000)) / 16000
  noise = np.random.RandomState(seed).randn(t.size) * 0.05
  sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t * (1 + t)) + noise).astype(np.float32), 16000)


def test_audio_units_and_joined_audio(tmp_path):
  cm = tmp_path / "cm"
  cm.mkdir()
  for i, part in enumerate(("mutual", "correct", "incorrect")):
    _wav(str(cm / f"s1_{part}.wav"), 0.6 + 0.2 * i, 200 + 150 * i, i)
  centroids = np.random.RandomState(0).randn(500, MfccEncoder.dim).astype(np.float32) * 20
  np.save(tmp_path / "km.npy", centroids)
  src = make_audio_units("mfcc", str(tmp_path / "km.npy"))

  def direct(*names):
    wav = np.concatenate([audio_lib.load_audio(str(cm / n)) for n in names])
    return dedup_lib.dedup(extract_lib.units_for_batch(MfccEncoder(), centroids, [wav])[0])[0]

  got = src.units([str(cm / "s1_correct.wav")])
  assert got.tolist() == direct("s1_correct.wav").tolist() and len(got) > 2
  joined = src.units([str(cm / "s1_mutual.wav"), str(cm / "s1_incorrect.wav")])
  assert joined.tolist() == direct("s1_mutual.wav", "s1_incorrect.wav").tolist()  # waveforms joined first

  bench = bm.load_benchmark("cm_ssc", str(cm), cm_modes=["ss"], units=src)
  assert bench.items["s1|ss|correct"].pieces == [
      ("marker", "speech"), ("speech", [str(cm / "s1_mutual.wav"), str(cm / "s1_correct.wav")])]

  prompts = run.read_audio_prompts(str(cm), src, seconds=0.5)
  assert [p["name"] for p in prompts] == ["s1_correct", "s1_incorrect", "s1_mutual"]
  assert sum(prompts[0]["duration"]) == audio_lib.num_frames(8000)  # 0.5 s of audio, 25 frames per second
  with pytest.raises(ValueError, match="give either --units or --encoder/--kmeans"):
    run.units_source(None, units="u.jsonl", encoder="mfcc", kmeans=str(tmp_path / "km.npy"))
  with pytest.raises(ValueError, match="audio input needs --encoder and --kmeans"):
    make_audio_units("mfcc", None)
