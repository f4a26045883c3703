"""Vocoder speed: our JAX unit HiFi-GAN vs speechbrain's torch UnitHifiganGenerator, same weights, same CPU.

  python tools/bench_vocoder.py --sb_python=~/.cache/slm_jax/venv-speechbrain/bin/python [--repeats=3]
  python tools/bench_vocoder.py --side=ours       # ours alone, random weights (no speechbrain environment)

A batch of 8 clips of 4-12 s (unit lengths drawn once, seed 0) through speechbrain's generator config from its
docs (512 channels, upsampling 5,4,4,2,2, resblock kernels 3,7,11; 320 samples per unit), random weights.
speechbrain runs in its own environment (torch 2.11 + torchaudio 2.11.0 + speechbrain 1.1.2; --sb_python) on
the padded batch (its `inference`, no duration predictor); ours runs the same batch masked per clip. Times are
the best of --repeats after one warm-up (compilation excluded); RTF = compute seconds / audio seconds.
The longest clip (no padding) is compared between the two as a check.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

KWARGS = dict(in_channels=128, out_channels=1, resblock_type="1", resblock_dilation_sizes=[[1, 3, 5]] * 3,
              resblock_kernel_sizes=[3, 7, 11], upsample_kernel_sizes=[11, 8, 8, 4, 4], upsample_initial_channel=512,
              upsample_factors=[5, 4, 4, 2, 2], vocab_size=500, embedding_dim=128, duration_predictor=False)
HOP, SR = 320, 16000


def clips(batch: int = 8, max_seconds: float = 12.0, seed: int = 0) -> list[np.ndarray]:
  """`batch` unit sequences of evenly spaced lengths, from a third of `max_seconds` (4 s by default) up to it."""
  rng = np.random.default_rng(seed)
  seconds = np.linspace(max_seconds / 3, max_seconds, batch)
  return [rng.integers(0, KWARGS["vocab_size"], int(s * SR / HOP)) for s in seconds]


def torch_side(work: str, repeats: int, threads: int, batch: int = 8, max_seconds: float = 12.0) -> None:
  """Runs in the speechbrain environment: builds the generator, saves its weights, times `inference`."""
  import torch
  from speechbrain.lobes.models.HifiGAN import UnitHifiganGenerator
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  gen = UnitHifiganGenerator(**KWARGS).eval()
  torch.save(gen.state_dict(), os.path.join(work, "generator.ckpt"))
  with open(os.path.join(work, "kwargs.json"), "w") as f:
    json.dump(KWARGS, f)
  cs = clips(batch, max_seconds)
  x = torch.zeros(len(cs), max(map(len, cs)), 1, dtype=torch.long)
  for i, c in enumerate(cs):
    x[i, :len(c), 0] = torch.as_tensor(c)
  times = []
  with torch.inference_mode():
    for _ in range(repeats + 1):
      t = time.perf_counter()
      wav = gen.inference(x)
      times.append(time.perf_counter() - t)
  longest = int(np.argmax([len(c) for c in cs]))
  np.save(os.path.join(work, "torch_longest.npy"), wav[longest, 0].numpy())
  with open(os.path.join(work, "torch.json"), "w") as f:
    json.dump({"seconds": min(times[1:]), "all": times, "torch": torch.__version__, "threads": threads}, f)


def _time_ours(voc, cs, repeats: int) -> tuple[list[float], list[np.ndarray]]:
  times = []
  for _ in range(repeats + 1):
    t = time.perf_counter()
    wavs = voc.synthesize(cs)
    times.append(time.perf_counter() - t)
  return times, wavs


def ours_alone(args) -> None:
  """Our vocoder of the same config on random weights (its own init), timed as in the comparison."""
  from slm_jax import console
  console.setup()
  import jax
  from flax import nnx
  from slm_jax.vocoder import Vocoder, convert
  from slm_jax.vocoder import model as vm
  cfg = convert.speechbrain_config(KWARGS)
  state = nnx.state(vm.UnitHifiGan(cfg, rngs=nnx.Rngs(0)))
  params = {".".join(str(p) for p in path): np.asarray(v) for path, v in nnx.to_flat_state(state)}
  cs = clips(args.clips, args.max_seconds)
  voc = Vocoder(cfg, params, batch_size=len(cs), bucket_frames=max(map(len, cs)))
  times, wavs = _time_ours(voc, cs, args.repeats)
  audio = sum(len(c) for c in cs) * HOP / SR
  ours = min(times[1:])
  print(json.dumps({"clips": len(cs), "audio_seconds": round(audio, 2), "jax": jax.__version__,
                    "device": str(jax.devices()[0]), "ours_seconds": round(ours, 4),
                    "ours_rtf": round(ours / audio, 4), "ours_all": [round(t, 4) for t in times],
                    "units": [int(len(c)) for c in cs], "samples": [int(len(w)) for w in wavs]}, indent=2))


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--sb_python", default=os.path.expanduser("~/.cache/slm_jax/venv-speechbrain/bin/python"))
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--threads", type=int, default=os.cpu_count())
  ap.add_argument("--clips", type=int, default=8, help="clips in the batch")
  ap.add_argument("--max_seconds", type=float, default=12.0, help="longest clip (the shortest is a third of it)")
  ap.add_argument("--side", choices=("both", "ours"), default="both",
                  help="ours: time our vocoder alone on random weights (no speechbrain environment needed)")
  ap.add_argument("--torch_side", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.torch_side:
    return torch_side(args.torch_side, args.repeats, args.threads, args.clips, args.max_seconds)
  if args.side == "ours":
    return ours_alone(args)
  if not os.path.isfile(args.sb_python):
    sys.exit(f"error: no speechbrain python at {args.sb_python} (see tests/test_vocoder_speechbrain.py)")
  with tempfile.TemporaryDirectory() as work:
    subprocess.run([args.sb_python, __file__, f"--torch_side={work}", f"--repeats={args.repeats}",
                    f"--threads={args.threads}", f"--clips={args.clips}", f"--max_seconds={args.max_seconds}"],
                   check=True)
    with open(os.path.join(work, "torch.json")) as f:
      ref = json.load(f)
    from slm_jax import console
    console.setup()  # what every tool does first
    import jax
    from slm_jax.vocoder import Vocoder, convert
    convert.convert("speechbrain", os.path.join(work, "generator.ckpt"), os.path.join(work, "kwargs.json"),
                    os.path.join(work, "jax"))
    cs = clips(args.clips, args.max_seconds)
    voc = Vocoder.load(os.path.join(work, "jax"), batch_size=len(cs), bucket_frames=max(map(len, cs)))
    times, wavs = _time_ours(voc, cs, args.repeats)
    longest = int(np.argmax([len(c) for c in cs]))
    diff = float(np.abs(wavs[longest] - np.load(os.path.join(work, "torch_longest.npy"))).max())
  audio = sum(len(c) for c in cs) * HOP / SR
  ours = min(times[1:])
  load = os.getloadavg()
  print(json.dumps({
      "clips": len(cs), "audio_seconds": round(audio, 1), "cpu_count": os.cpu_count(), "loadavg_1m_5m": load[:2],
      "jax": jax.__version__, "device": str(jax.devices()[0]), "torch": ref["torch"], "torch_threads": ref["threads"],
      "ours_seconds": round(ours, 3), "ours_rtf": round(ours / audio, 4), "ours_all": [round(t, 3) for t in times],
      "speechbrain_seconds": round(ref["seconds"], 3), "speechbrain_rtf": round(ref["seconds"] / audio, 4),
      "speechbrain_all": [round(t, 3) for t in ref["all"]], "speedup": round(ref["seconds"] / ours, 2),
      "longest_clip_max_abs_diff": diff}, indent=2))


if __name__ == "__main__":
  main()
