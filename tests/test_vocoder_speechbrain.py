"""Vocoder parity with speechbrain's real UnitHifiganGenerator (random weights), with and without the duration
predictor, single clips and one padded batch, through tools/convert_vocoder's speechbrain path.

The references in tests/data/vocoder/speechbrain_golden.npz were made by speechbrain 1.1.2 itself
(tests/vocoder_speechbrain_ref.py; speechbrain imports torchaudio, which does not load with this venv's torch).
The slow test re-runs that script live in a side environment with new weights:
  python3 -m venv ~/.cache/slm_jax/venv-speechbrain
  ~/.cache/slm_jax/venv-speechbrain/bin/pip install torch==2.11.0 torchaudio==2.11.0 speechbrain==1.1.2
  SLM_JAX_SLOW=1 .venv/bin/pytest tests/test_vocoder_speechbrain.py
"""
import json
import os
import subprocess

import numpy as np
import pytest
import torch

from slm_jax.vocoder import Vocoder, convert

HERE = os.path.dirname(__file__)
GOLDEN = os.path.join(HERE, "data", "vocoder", "speechbrain_golden.npz")
# largest |ours - speechbrain| on waveforms of peak 0.70 (dp) and 0.32 (nodp): measured 3.0e-6 and 1.5e-7, the same
# for a clip alone and in the padded batch
TOL = {"dp": 1.5e-5, "nodp": 1e-6}
SB_PYTHON = os.environ.get("SLM_JAX_SPEECHBRAIN_PYTHON",
                           os.path.expanduser("~/.cache/slm_jax/venv-speechbrain/bin/python"))


def _convert(z, name, tmp_path):
  """The case's state dict saved as a torch checkpoint + kwargs JSON, converted by the real tool path."""
  sd = {k.split("/sd/", 1)[1]: torch.from_numpy(z[k]) for k in z.files if k.startswith(f"{name}/sd/")}
  ckpt, cfg = tmp_path / f"{name}.ckpt", tmp_path / f"{name}.json"
  torch.save(sd, ckpt)
  cfg.write_text(str(z[f"{name}/kwargs"]))
  out = tmp_path / f"{name}_jax"
  convert.convert("speechbrain", str(ckpt), str(cfg), str(out))
  return str(out)


def _check(z, name, vocoder_dir):
  n = len([k for k in z.files if k.startswith(f"{name}/units_")])
  units = [z[f"{name}/units_{i}"] for i in range(n)]
  refs = [z[f"{name}/wav_{i}"] for i in range(n)]
  assert all(r.std() > 0.01 for r in refs), "reference waveforms must vary for the comparison to mean something"
  voc = Vocoder.load(vocoder_dir, batch_size=n + 1, bucket_frames=128)  # all clips in one padded batch
  if voc.cfg.dur_predictor:
    for i, d in enumerate(voc.durations(units)):
      np.testing.assert_array_equal(d, z[f"{name}/dur_{i}"])
  for i in range(n):  # each clip alone (the other rows are padding)
    wav = voc([units[i]])[0]
    assert wav.shape == refs[i].shape
    assert np.abs(wav - refs[i]).max() < TOL[name]
  for wav, ref in zip(voc(units), refs):
    assert wav.shape == ref.shape
    assert np.abs(wav - ref).max() < TOL[name]


@pytest.mark.parametrize("name", ["dp", "nodp"])
def test_speechbrain_golden_parity(name, tmp_path):
  z = np.load(GOLDEN)
  _check(z, name, _convert(z, name, tmp_path))


def test_speechbrain_bad_state_dict(tmp_path):
  z = np.load(GOLDEN)
  kw = json.loads(str(z["nodp/kwargs"]))
  sd = {k.split("/sd/", 1)[1]: z[k] for k in z.files if k.startswith("nodp/sd/")}
  sd["extra.weight"] = np.zeros(3, np.float32)
  del sd["conv_post.conv.bias"]
  with pytest.raises(ValueError, match=r"missing \['conv_post.conv.bias'\].*unexpected \['extra.weight'\]"):
    convert.map_state_dict(convert.speechbrain_config(kw), sd, "speechbrain")
  with pytest.raises(ValueError, match="multi_speaker"):
    convert.speechbrain_config(dict(kw, multi_speaker=True), "x.json")
  del sd["extra.weight"]
  sd["conv_post.conv.bias"] = z["nodp/sd/conv_post.conv.bias"]
  cfg = convert.speechbrain_config(kw)
  voc = Vocoder(cfg, convert.map_state_dict(cfg, sd, "speechbrain"))
  assert cfg.min_frames() == 4  # conv_pre's reflect padding of 3 (torch: padding < input length)
  with pytest.raises(ValueError, match="clip 1: 3 frames, this vocoder needs at least 4"):
    voc([np.arange(8), np.arange(3)], [np.ones(8, int), np.ones(3, int)])
  with pytest.raises(ValueError, match=r"clip 0: unit ids must lie in \[0, 100\)"):
    voc([np.arange(95, 105)], [np.ones(10, int)])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(SB_PYTHON), reason=f"no speechbrain environment at {SB_PYTHON}")
def test_speechbrain_live(tmp_path):
  out = tmp_path / "live.npz"
  subprocess.run([SB_PYTHON, os.path.join(HERE, "vocoder_speechbrain_ref.py"), f"--out={out}", "--seed=7"],
                 check=True, timeout=600)
  z = np.load(out)
  for name in ("dp", "nodp"):
    _check(z, name, _convert(z, name, tmp_path))
