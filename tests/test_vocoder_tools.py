"""tools/vocode.py on slamkit features JSONL (units + duration, audio_repr) against speechbrain's golden waveforms."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from slm_jax.vocoder import records as vr
from test_vocoder_speechbrain import GOLDEN, TOL, _convert
from xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # a tool subprocess: ~1 min on 2 busy cores; the library path is tested by default
def test_vocode_tool_matches_speechbrain(tmp_path):
  z = np.load(GOLDEN)
  voc_dir = _convert(z, "dp", tmp_path)
  u0, u1 = z["dp/units_0"], z["dp/units_1"]
  feats = tmp_path / "features.jsonl"
  with open(feats, "w") as f:  # the duration predictor replaces the given durations
    f.write(json.dumps({"units": u0.tolist(), "duration": [3] * len(u0), "file_name": "a/clip0.flac"}) + "\n")
    f.write(json.dumps({"audio_repr": "".join(f"<Un{u}>" for u in u1), "file_name": "clip1.wav"}) + "\n")
  out = tmp_path / "wavs"
  env = {**os.environ, "XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu"}
  p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "vocode.py"), f"--units={feats}",
                      f"--vocoder={voc_dir}", f"--out_dir={out}", "--bucket_frames=128"],
                     capture_output=True, text=True, env=env, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  for name, ref in (("clip0", z["dp/wav_0"]), ("clip1", z["dp/wav_1"])):
    wav, sr = sf.read(out / f"{name}.wav", dtype="float32")
    assert sr == 16000 and wav.shape == ref.shape
    assert np.abs(wav - ref).max() < TOL["dp"]  # measured 2.1e-6 (written as float WAV)


def test_units_records_errors(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"units": [1, 2], "duration": [1, 0], "file_name": "x.wav"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl line 1: field 'duration'"):
    vr.read_units_jsonl(str(bad))
  bad.write_text('{"file_name": "x.wav"}\n\n{"units": []}\n')
  with pytest.raises(ValueError, match=r"line 1: no field 'units' or 'audio_repr'"):
    vr.read_units_jsonl(str(bad))
  ok = tmp_path / "ok.jsonl"
  ok.write_text('{"audio_repr": "<Un3><Un49><Un3>", "file_name": "d/s.flac"}\n')
  (rec,) = vr.read_units_jsonl(str(ok))
  assert rec["name"] == "s" and rec["units"].tolist() == [3, 49, 3] and rec["duration"] is None


@pytest.mark.slow  # a generate.py subprocess (~1 min on 2 busy cores)
def test_generate_cli_writes_a_wav_per_continuation(tmp_path):
  import jax
  from slm_jax import sharding
  from test_eval_genppl_pipeline import _random_vocoder
  from test_eval_helpers import speech_checkpoint
  ckpt = str(tmp_path / "slm")
  speech_checkpoint(ckpt, sharding.make_mesh(fsdp=1, devices=jax.devices()[:1]))
  _random_vocoder(str(tmp_path / "voc"))
  prompts = tmp_path / "prompts.jsonl"
  with open(prompts, "w") as f:
    for i in range(2):
      f.write(json.dumps({"units": list(range(10 + i)), "duration": [10] * (10 + i), "file_name": f"p{i}.wav"}) + "\n")
  out = tmp_path / "gen" / "cont.jsonl"
  env = {**os.environ, "XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu"}
  p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "generate.py"), f"--ckpt={ckpt}",
                      f"--prompts={prompts}", f"--out={out}", "--max_new_tokens=8", f"--vocoder={tmp_path / 'voc'}",
                      "--vocode_prompt"], capture_output=True, text=True, env=env, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  recs = [json.loads(ln) for ln in out.read_text().splitlines()]
  for i, r in enumerate(recs):
    assert r["wav"] == str(tmp_path / "gen" / f"p{i}_continuation.wav")
    wav, sr = sf.read(r["wav"])
    assert sr == 16000 and len(wav) == (len(r["prompt"]) + 8) * 320
