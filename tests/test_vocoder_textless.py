"""textlesslib / slamkit layout: a `generator` state dict with the real key names (weight_g / weight_v from
torch's weight_norm) and a `_config.json`, converted by tools/convert_vocoder.py, against a torch reference
written here from the published CodeGenerator (textlesslib `vocoders/hifigan/generator.py`, copied in slamkit)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import weight_norm

from slm_jax.vocoder import Vocoder, convert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = {"resblock": "1", "upsample_rates": [5, 4, 4, 2, 2], "upsample_kernel_sizes": [11, 8, 8, 4, 4],
       "upsample_initial_channel": 32, "resblock_kernel_sizes": [3, 7], "resblock_dilation_sizes": [[1, 3, 5]] * 2,
       "num_embeddings": 100, "embedding_dim": 16, "model_in_dim": 16, "code_hop_size": 320, "sampling_rate": 16000,
       "dur_predictor_params": {"encoder_embed_dim": 16, "var_pred_hidden_dim": 16, "var_pred_kernel_size": 3,
                                "var_pred_dropout": 0.5}}
# largest |ours - torch| on these waveforms (weights scaled up, peaks near 1): measured 2.3e-6 for a clip alone,
# 9.2e-6 in the padded batch, 1.2e-5 with given durations
TOL = 5e-5


class RefResBlock(nn.Module):
  def __init__(self, ch, k, dilations):
    super().__init__()
    conv = lambda d: weight_norm(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=(k * d - d) // 2))  # noqa: E731
    self.convs1 = nn.ModuleList([conv(d) for d in dilations])
    self.convs2 = nn.ModuleList([conv(1) for _ in dilations])

  def forward(self, x):
    for c1, c2 in zip(self.convs1, self.convs2):
      x = c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1)) + x
    return x


class RefVariancePredictor(nn.Module):
  def __init__(self, p):
    super().__init__()
    h, k = p["var_pred_hidden_dim"], p["var_pred_kernel_size"]
    self.conv1 = nn.Sequential(nn.Conv1d(p["encoder_embed_dim"], h, k, padding=(k - 1) // 2), nn.ReLU())
    self.ln1 = nn.LayerNorm(h)
    self.conv2 = nn.Sequential(nn.Conv1d(h, h, k, padding=1), nn.ReLU())
    self.ln2 = nn.LayerNorm(h)
    self.proj = nn.Linear(h, 1)

  def forward(self, x):  # B x T x C -> B x T (dropout is off at inference)
    x = self.ln1(self.conv1(x.transpose(1, 2)).transpose(1, 2))
    x = self.ln2(self.conv2(x.transpose(1, 2)).transpose(1, 2))
    return self.proj(x).squeeze(2)


class RefCodeGenerator(nn.Module):
  def __init__(self, cfg):
    super().__init__()
    ch0 = cfg["upsample_initial_channel"]
    self.conv_pre = weight_norm(nn.Conv1d(cfg["model_in_dim"], ch0, 7, 1, padding=3))
    self.ups = nn.ModuleList([weight_norm(nn.ConvTranspose1d(ch0 // 2**i, ch0 // 2**(i + 1), k, u, padding=(k - u) // 2))
                              for i, (u, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"]))])
    self.resblocks = nn.ModuleList([RefResBlock(ch0 // 2**(i + 1), k, d) for i in range(len(self.ups))
                                    for k, d in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"])])
    self.conv_post = weight_norm(nn.Conv1d(ch0 // 2**len(self.ups), 1, 7, 1, padding=3))
    self.dict = nn.Embedding(cfg["num_embeddings"], cfg["embedding_dim"])
    self.dur_predictor = RefVariancePredictor(cfg["dur_predictor_params"])
    self.nk = len(cfg["resblock_kernel_sizes"])

  def forward(self, code, dur_prediction):
    x = self.dict(code).transpose(1, 2)
    if dur_prediction:
      dur = torch.clamp(torch.round(torch.exp(self.dur_predictor(x.transpose(1, 2))) - 1).long(), min=1)
      x = torch.repeat_interleave(x, dur.view(-1), dim=2)
    x = self.conv_pre(x)
    for i, up in enumerate(self.ups):
      x = up(F.leaky_relu(x, 0.1))
      x = sum(self.resblocks[i * self.nk + j](x) for j in range(self.nk)) / self.nk
    return torch.tanh(self.conv_post(F.leaky_relu(x)))[0, 0]


@pytest.fixture(scope="module")
def textless(tmp_path_factory):
  """(torch reference, converted vocoder dir, raw files) for random weights with varying, unsaturated output."""
  tmp = tmp_path_factory.mktemp("textless")
  torch.manual_seed(0)
  ref = RefCodeGenerator(CFG).eval()
  with torch.no_grad():
    for key, p in ref.named_parameters():
      if key.endswith("weight_g"):  # magnitudes != |v| (folding is exercised), sized for a varying waveform
        p.mul_((torch.rand_like(p) + 0.5) * 2.4)
      elif key.startswith("dur_predictor.ln"):
        p.add_(torch.randn_like(p) * 0.3)
    ref.dur_predictor.proj.bias.fill_(0.8)  # predicted durations of 1..10 frames
    ref.dur_predictor.proj.weight.mul_(2)
  ckpt, cfg = tmp / "g_00500000", tmp / "config.json"
  torch.save({"generator": ref.state_dict(), "steps": 500000}, ckpt)
  cfg.write_text(json.dumps(CFG))
  out = tmp / "vocoder"
  subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_vocoder.py"), "--format=textless",
                  f"--checkpoint={ckpt}", f"--config={cfg}", f"--out_dir={out}"], check=True, timeout=300)
  return ref, str(out), ckpt, cfg


def test_textless_real_key_names(textless):
  ref, _, ckpt, _ = textless
  keys = torch.load(ckpt, weights_only=True)["generator"].keys()
  for k in ("dict.weight", "conv_pre.weight_g", "conv_pre.weight_v", "ups.0.weight_g", "resblocks.0.convs1.0.weight_v",
            "resblocks.3.convs2.2.bias", "conv_post.weight_g", "dur_predictor.conv1.0.weight", "dur_predictor.ln1.weight",
            "dur_predictor.conv2.0.bias", "dur_predictor.ln2.bias", "dur_predictor.proj.weight"):
    assert k in keys


def test_textless_parity(textless):
  ref, out, _, _ = textless
  rng = np.random.default_rng(1)
  clips = [rng.integers(0, 100, n) for n in (5, 11, 17)]
  voc = Vocoder.load(out, batch_size=4, bucket_frames=64)
  with torch.no_grad():
    refs = [ref(torch.as_tensor(c)[None], dur_prediction=True).numpy() for c in clips]
    given = [rng.integers(1, 4, len(c)) for c in clips]
    refs_given = [ref(torch.as_tensor(np.repeat(c, d))[None], dur_prediction=False).numpy()
                  for c, d in zip(clips, given)]
  assert all(r.std() > 0.02 and np.mean(np.abs(r) > 0.99) < 0.01 for r in refs)
  assert max(d.max() for d in voc.durations(clips)) > 3
  for wav, r in zip(voc(clips), refs):  # one padded batch, durations from the predictor
    assert wav.shape == r.shape and np.abs(wav - r).max() < TOL
  alone = voc([clips[0]])[0]
  assert alone.shape == refs[0].shape and np.abs(alone - refs[0]).max() < TOL
  for wav, r in zip(voc(clips, given), refs_given):  # given durations
    assert wav.shape == r.shape and np.abs(wav - r).max() < TOL


def test_textless_bad_inputs(textless, tmp_path):
  ref, _, _, cfg = textless
  sd = {k: v.numpy() for k, v in ref.state_dict().items()}
  sd.pop("dur_predictor.ln2.weight")
  with pytest.raises(ValueError, match=r"missing \['dur_predictor.ln2.weight'\]"):
    convert.map_state_dict(convert.textless_config(CFG), sd, "textless")
  with pytest.raises(ValueError, match="f0"):
    convert.textless_config(dict(CFG, f0=True), "x.json")
  bad = tmp_path / "bad.pt"
  torch.save({"model": {}}, bad)
  with pytest.raises(ValueError, match="no 'generator'"):
    convert.convert("textless", str(bad), str(cfg), str(tmp_path / "o"))
