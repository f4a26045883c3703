"""Reference waveforms from speechbrain's real UnitHifiganGenerator (random weights), for the vocoder parity test.

Runs in an environment with torch==2.11.0, torchaudio==2.11.0, speechbrain==1.1.2 (speechbrain imports torchaudio;
torchaudio 2.11.1's library needs a symbol torch 2.11.0 lacks), e.g. the one `tests/test_vocoder_speechbrain.py`
documents:

  ~/.cache/slm_jax/venv-speechbrain/bin/python tests/vocoder_speechbrain_ref.py --out=tests/data/vocoder/speechbrain_golden.npz

Writes, per case: the constructor kwargs (JSON), the state dict (weight norm kept as torch's parametrizations),
the unit clips and speechbrain's `inference` waveform of each clip alone (and its durations when predicted).
"""
import argparse
import json

import numpy as np
import torch
from speechbrain.lobes.models.HifiGAN import UnitHifiganGenerator

BASE = dict(in_channels=16, out_channels=1, upsample_kernel_sizes=[11, 8, 8, 4, 4], upsample_initial_channel=32,
            upsample_factors=[5, 4, 4, 2, 2], vocab_size=100, embedding_dim=16, var_pred_hidden_dim=16,
            var_pred_kernel_size=3, var_pred_dropout=0.5)
CASES = {
    "dp": dict(BASE, resblock_type="1", resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5]] * 2,
               duration_predictor=True),
    "nodp": dict(BASE, resblock_type="2", resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 2]],
                 duration_predictor=False),
}
CLIP_LENGTHS = {"dp": [7, 12, 18], "nodp": [9, 16, 30]}


def build(kw, seed):
  """Random generator whose weight-norm magnitudes are scaled (x 0.5..1.5 x gain) so that its waveform varies
  (std > 0.03) without saturating the tanh (folding g * v / |v| is exercised too)."""
  probe = torch.arange(20)[None, :, None] % kw["vocab_size"]
  for gain in np.arange(1.0, 4.0, 0.05):
    torch.manual_seed(seed)
    gen = UnitHifiganGenerator(**kw).eval()
    with torch.no_grad():
      for key, p in gen.named_parameters():
        if key.endswith("original0"):
          p.mul_((torch.rand_like(p) + 0.5) * float(gain))
      wav = gen.inference(probe)
    if wav.std() > 0.03 and (wav.abs() > 0.99).float().mean() < 0.01:
      return gen
  raise RuntimeError("no gain gives a varying, unsaturated waveform")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", required=True)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  torch.manual_seed(args.seed)
  rng = np.random.default_rng(args.seed)
  out = {"versions": json.dumps({"torch": torch.__version__, "speechbrain": __import__("speechbrain").__version__})}
  for name, kw in CASES.items():
    gen = build(kw, args.seed)
    out[f"{name}/kwargs"] = json.dumps(kw)
    for key, v in gen.state_dict().items():
      out[f"{name}/sd/{key}"] = v.numpy()
    for i, n in enumerate(CLIP_LENGTHS[name]):
      units = rng.integers(0, kw["vocab_size"], n)
      x = torch.as_tensor(units)[None, :, None]
      with torch.no_grad():
        wav = gen.inference(x)[0, 0].numpy()
        if kw["duration_predictor"]:
          log_dur = gen.var_predictor(gen.unit_embedding(x)[:, :, 0])
          out[f"{name}/dur_{i}"] = torch.clamp(torch.round(torch.exp(log_dur) - 1).long(), min=1)[0].numpy()
      out[f"{name}/units_{i}"] = units
      out[f"{name}/wav_{i}"] = wav.astype(np.float32)
  np.savez_compressed(args.out, **out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
