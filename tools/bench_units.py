"""Unit-extraction speed: our Flax HuBERT (JAX) against transformers' HubertModel (torch) on the same batch.

  python tools/bench_units.py [--batch_size=4] [--seconds=10] [--repeats=3] [--hidden_size=768 ...]

Random weights in the shape of slprl/mhubert-base-25hz (12 layers, 768 wide, 640-sample frames), saved with
save_pretrained and imported, so both sides run identical weights. Both compute hidden_states[11]
(docs/reference.md §1) and the nearest of 500 centroids. torch is timed twice: as slamkit runs it (all 12
layers, output_hidden_states) and stopped after layer 11 (the same work as ours). Real-time factor = seconds of
audio per second of wall time
(higher is faster); both sides start from a list of numpy waveforms and end with units on the host (batching and
host-to-device copies included); compilation is excluded (one warm-up call each).
"""
import json
import os
import tempfile
import time

from absl import app, flags

_BATCH = flags.DEFINE_integer("batch_size", 4, "Clips per batch.")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Seconds of audio per clip.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per side (median reported).")
_LAYERS = flags.DEFINE_integer("num_hidden_layers", 12, "Transformer layers of the random model.")
_HIDDEN = flags.DEFINE_integer("hidden_size", 768, "Model width (768: mhubert-base).")
_LAYER = flags.DEFINE_integer("layer", 11, "hidden_states index extracted.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "JAX compute dtype.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time transformers in torch.")
_TORCH_DEVICE = flags.DEFINE_string("torch_device", None, "torch device (default: cuda if available, else cpu).")
_TORCH_DTYPE = flags.DEFINE_enum("torch_dtype", "float32", ["float32", "bfloat16"], "torch compute dtype.")


def _median_time(fn, repeats):
  fn()  # warm-up (compilation)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return sorted(times)[len(times) // 2]


def main(argv):
  del argv
  from slm_jax import console
  console.setup()  # what every tool does first
  import jax
  import numpy as np
  import torch
  import transformers

  from slm_jax.units import audio as audio_lib
  from slm_jax.units import kmeans
  from slm_jax.units.encoder import HubertEncoder
  from slm_jax.units.hubert_import import load_hubert

  k, s = audio_lib.MHUBERT_25HZ_CONV
  d = _HIDDEN.value
  cfg = transformers.HubertConfig(hidden_size=d, num_hidden_layers=_LAYERS.value, num_attention_heads=d // 64,
                                  intermediate_size=4 * d, conv_dim=(512,) * len(k), conv_kernel=k, conv_stride=s)
  torch.manual_seed(0)
  tm = transformers.HubertModel(cfg).eval()
  rng = np.random.default_rng(0)
  n = int(_SECONDS.value * audio_lib.SAMPLE_RATE)
  wavs = [(rng.standard_normal(n) * 0.1).astype(np.float32) for _ in range(_BATCH.value)]
  audio_seconds = _BATCH.value * _SECONDS.value
  centroids = rng.standard_normal((500, d)).astype(np.float32)
  with tempfile.TemporaryDirectory() as tmp:
    tm.save_pretrained(tmp)
    ours = load_hubert(tmp)
  enc = HubertEncoder(ours, layer=_LAYER.value, dtype=_DTYPE.value)
  c_dev = jax.device_put(centroids)

  def jax_run():
    feats, frames = enc.encode_batch(wavs)
    return np.asarray(kmeans.assign(feats, c_dev))

  results = {"device": str(jax.devices()[0]), "jax_version": jax.__version__, "torch_version": torch.__version__,
             "torch_threads": torch.get_num_threads(), "batch": _BATCH.value, "clip_seconds": _SECONDS.value,
             "audio_seconds": audio_seconds, "layer": _LAYER.value, "dtype": _DTYPE.value,
             "params_millions": round(sum(p.numel() for p in tm.parameters()) / 1e6, 1)}
  t_jax = _median_time(jax_run, _REPEATS.value)
  results["jax_seconds"] = round(t_jax, 3)
  results["jax_rtf"] = round(audio_seconds / t_jax, 2)

  if _TORCH.value:
    dev = _TORCH_DEVICE.value or ("cuda" if torch.cuda.is_available() else "cpu")
    tdt = getattr(torch, _TORCH_DTYPE.value)
    c_t = torch.from_numpy(centroids).to(dev, tdt)

    def collate():  # as slamkit: pad_sequence, 40 zeros each side, to the device (timed, as our host side is)
      padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(w) for w in wavs], batch_first=True)
      return torch.nn.functional.pad(padded, (40, 40)).to(dev, tdt)
    tm.to(dev, tdt)
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    results["torch_device"] = dev

    def nearest(h):
      return torch.argmin((c_t * c_t).sum(-1) - 2 * h @ c_t.T, dim=-1)

    def torch_slamkit():
      with torch.inference_mode():
        out = nearest(tm(collate(), output_hidden_states=True).hidden_states[_LAYER.value])
        sync()
        return out.cpu().numpy()

    truncated = transformers.HubertModel(cfg).eval().to(dev, tdt)
    truncated.load_state_dict(tm.state_dict())
    truncated.encoder.layers = truncated.encoder.layers[:_LAYER.value]

    def torch_same_work():
      with torch.inference_mode():
        out = nearest(truncated(collate()).last_hidden_state)
        sync()
        return out.cpu().numpy()

    t_full = _median_time(torch_slamkit, _REPEATS.value)
    t_same = _median_time(torch_same_work, _REPEATS.value)
    results.update(torch_slamkit_seconds=round(t_full, 3), torch_slamkit_rtf=round(audio_seconds / t_full, 2),
                   torch_same_work_seconds=round(t_same, 3), torch_same_work_rtf=round(audio_seconds / t_same, 2),
                   jax_speedup_vs_torch_same_work=round(t_same / t_jax, 2))
    if _DTYPE.value == _TORCH_DTYPE.value == "float32":  # same weights, same units (fp32 on both sides)
      agree = float(np.mean(jax_run()[:, :torch_same_work().shape[1]] == torch_same_work()))
      results["unit_agreement"] = round(agree, 4)
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  app.run(main)
