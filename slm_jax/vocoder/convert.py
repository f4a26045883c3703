"""Unit HiFi-GAN checkpoints in: textlesslib / slamkit (`generator` state dict + `_config.json`) and
speechbrain's `UnitHifiganGenerator` (state dict + a JSON of its constructor arguments, one codebook).

Weight norm (`weight_g`/`weight_v`, or torch's `parametrizations.weight.original0/1`) is folded here:
w = g * v / |v|, the norm over every axis but the first (torch's `weight_norm(dim=0)`).
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
from flax import nnx

from slm_jax.vocoder import model as vm
from slm_jax.vocoder.config import PARAMS_NAME, VocoderConfig

TEXTLESS_UNSUPPORTED = ("f0", "multispkr", "multistyle", "embedder_params")


def textless_config(cfg: dict, path: str = "config") -> VocoderConfig:
  """VocoderConfig from a textlesslib / slamkit hifigan `_config.json` dict."""
  bad = [k for k in TEXTLESS_UNSUPPORTED if cfg.get(k)]
  if bad:
    raise ValueError(f"{path}: {bad} (f0 / speaker / style conditioning) is not supported; a plain unit "
                     "vocoder such as hifigan_lj_mhubert_base_25hz is")
  missing = [k for k in ("num_embeddings", "embedding_dim", "upsample_rates", "upsample_kernel_sizes",
                         "upsample_initial_channel", "resblock_kernel_sizes", "resblock_dilation_sizes")
             if k not in cfg]
  if missing:
    raise ValueError(f"{path}: missing fields {missing}")
  if cfg.get("model_in_dim", cfg["embedding_dim"]) != cfg["embedding_dim"]:
    raise ValueError(f"{path}: model_in_dim {cfg['model_in_dim']} != embedding_dim {cfg['embedding_dim']}")
  dp = cfg.get("dur_predictor_params") or None
  k = dp["var_pred_kernel_size"] if dp else 3
  if dp and dp["encoder_embed_dim"] != cfg["embedding_dim"]:
    raise ValueError(f"{path}: dur_predictor_params.encoder_embed_dim != embedding_dim")
  return VocoderConfig(
      num_embeddings=cfg["num_embeddings"], embedding_dim=cfg["embedding_dim"],
      upsample_rates=tuple(cfg["upsample_rates"]), upsample_kernel_sizes=tuple(cfg["upsample_kernel_sizes"]),
      upsample_initial_channel=cfg["upsample_initial_channel"],
      resblock_kernel_sizes=tuple(cfg["resblock_kernel_sizes"]),
      resblock_dilation_sizes=tuple(tuple(d) for d in cfg["resblock_dilation_sizes"]),
      resblock_type=str(cfg.get("resblock", "1")), padding_mode="zeros", dur_predictor=dp is not None,
      dur_hidden_dim=dp["var_pred_hidden_dim"] if dp else 128, dur_kernel_size=k, dur_paddings=((k - 1) // 2, 1),
      dur_layer_norm=True, sample_rate=cfg.get("sampling_rate", 16000), source_format="textless")


def speechbrain_config(kw: dict, path: str = "config") -> VocoderConfig:
  """VocoderConfig from the keyword arguments of speechbrain's UnitHifiganGenerator."""
  g = lambda k, d=None: kw.get(k, d)  # noqa: E731
  problems = []
  if g("multi_speaker", False):
    problems.append("multi_speaker=True is not supported")
  if g("cond_channels", 0):
    problems.append("cond_channels > 0 is not supported")
  if g("skip_token_embedding", False):
    problems.append("skip_token_embedding=True (continuous input) is not supported")
  if g("out_channels", 1) != 1:
    problems.append("out_channels must be 1")
  if g("in_channels") != g("embedding_dim", 128):
    problems.append(f"in_channels {g('in_channels')} != embedding_dim {g('embedding_dim', 128)}")
  for k in ("resblock_type", "resblock_dilation_sizes", "resblock_kernel_sizes", "upsample_kernel_sizes",
            "upsample_initial_channel", "upsample_factors"):
    if k not in kw:
      problems.append(f"missing {k}")
  if problems:
    raise ValueError(f"{path}: " + "; ".join(problems))
  k = g("var_pred_kernel_size", 3)
  return VocoderConfig(
      num_embeddings=g("vocab_size", 100), embedding_dim=g("embedding_dim", 128),
      upsample_rates=tuple(kw["upsample_factors"]), upsample_kernel_sizes=tuple(kw["upsample_kernel_sizes"]),
      upsample_initial_channel=kw["upsample_initial_channel"],
      resblock_kernel_sizes=tuple(kw["resblock_kernel_sizes"]),
      resblock_dilation_sizes=tuple(tuple(d) for d in kw["resblock_dilation_sizes"]),
      resblock_type=str(kw["resblock_type"]), padding_mode="reflect", conv_post_bias=g("conv_post_bias", True),
      dur_predictor=bool(g("duration_predictor", False)), dur_hidden_dim=g("var_pred_hidden_dim", 128),
      dur_kernel_size=k, dur_paddings=((k - 1) // 2,) * 2, dur_layer_norm=False,
      sample_rate=g("sample_rate", 16000), source_format="speechbrain")


def _source_prefix(fmt: str, path: str) -> str:
  """Our module path -> the source state dict's prefix for it."""
  if fmt == "textless":
    path = re.sub(r"^embedding$", "dict", path)
    return re.sub(r"^(dur_predictor\.conv\d)$", r"\1.0", path) + "."
  path = re.sub(r"^embedding$", "unit_embedding", path)
  path = re.sub(r"^dur_predictor\.(conv\d)$", r"var_predictor.\1.0", path)
  path = re.sub(r"^dur_predictor\.proj$", "var_predictor.proj", path)
  if re.match(r"^(conv_pre|conv_post|ups\.\d+|resblocks\.\d+\.convs[12]?\.\d+|var_predictor\.conv\d\.0)$", path):
    path += ".conv"
  return path + "."


def _weight(sd: dict, prefix: str, used: set, missing: list):
  """A (weight-norm folded) weight under `prefix`."""
  for g_key, v_key in (("weight_g", "weight_v"), ("parametrizations.weight.original0",
                                                  "parametrizations.weight.original1")):
    if prefix + g_key in sd and prefix + v_key in sd:
      g, v = sd[prefix + g_key].astype(np.float64), sd[prefix + v_key].astype(np.float64)
      used.update((prefix + g_key, prefix + v_key))
      norm = np.sqrt((v ** 2).sum(axis=tuple(range(1, v.ndim)), keepdims=True))
      return (g * v / norm).astype(np.float32)
  if prefix + "weight" in sd:
    used.add(prefix + "weight")
    return sd[prefix + "weight"].astype(np.float32)
  missing.append(prefix + "weight (or weight_g/weight_v)")
  return None


def _plain(sd, key, used, missing):
  if key in sd:
    used.add(key)
    return np.asarray(sd[key], np.float32)
  missing.append(key)
  return None


def map_state_dict(cfg: VocoderConfig, sd: dict, fmt: str, source: str = "checkpoint") -> dict:
  """Our flat params {'conv_pre.kernel': array, ...} from a source state dict (numpy arrays)."""
  model = nnx.eval_shape(lambda: vm.UnitHifiGan(cfg, rngs=nnx.Rngs(0)))
  out, used, missing = {}, set(), []
  for path, node in nnx.iter_graph(model):
    name = ".".join(str(p) for p in path)
    pre = _source_prefix(fmt, name)
    if isinstance(node, vm.Conv1d):
      w = _weight(sd, pre, used, missing)  # torch (out, in, k)
      if w is not None:
        out[name + ".kernel"] = w.transpose(2, 1, 0)
      if node.bias is not None:
        out[name + ".bias"] = _plain(sd, pre + "bias", used, missing)
    elif isinstance(node, vm.ConvTranspose1d):
      w = _weight(sd, pre, used, missing)  # torch (in, out, k)
      if w is not None:
        out[name + ".kernel"] = w.transpose(0, 2, 1)
      out[name + ".bias"] = _plain(sd, pre + "bias", used, missing)
    elif isinstance(node, nnx.Embed):
      out[name + ".embedding"] = _plain(sd, pre + "weight", used, missing)
    elif isinstance(node, nnx.LayerNorm):
      out[name + ".scale"] = _plain(sd, pre + "weight", used, missing)
      out[name + ".bias"] = _plain(sd, pre + "bias", used, missing)
    elif isinstance(node, nnx.Linear):
      w = _plain(sd, pre + "weight", used, missing)
      out[name + ".kernel"] = None if w is None else w.T
      out[name + ".bias"] = _plain(sd, pre + "bias", used, missing)
  ignored = {k for k in sd if fmt == "speechbrain" and k.startswith("attn_pooling.")}  # identity on one codebook
  unexpected = sorted(set(sd) - used - ignored)
  if missing or unexpected:
    raise ValueError(f"{source}: state dict does not match the {fmt} vocoder config: missing {missing}, "
                     f"unexpected {unexpected}")
  expected = {".".join(str(p) for p in path): v for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  for key, var in expected.items():
    if out[key].shape != var.shape:
      raise ValueError(f"{source}: {key} has shape {out[key].shape}, the config implies {var.shape}")
  return out


def load_torch_state(checkpoint: str, fmt: str) -> dict:
  """A checkpoint's generator state dict as numpy arrays (torch.load with weights_only=True)."""
  import torch
  if not os.path.isfile(checkpoint):
    raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
  obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
  if fmt == "textless":
    if not isinstance(obj, dict) or "generator" not in obj:
      raise ValueError(f"{checkpoint}: no 'generator' state dict (a textlesslib hifigan .pt is expected)")
    obj = obj["generator"]
  elif isinstance(obj, dict) and "generator" in obj:
    obj = obj["generator"]
  return {k: v.detach().float().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def convert(fmt: str, checkpoint: str, config: str, out_dir: str) -> VocoderConfig:
  """Writes `out_dir/vocoder.json` and `out_dir/params.npz` from a torch checkpoint and its JSON config."""
  if fmt not in ("textless", "speechbrain"):
    raise ValueError(f"format must be 'textless' or 'speechbrain', got {fmt!r}")
  if not os.path.isfile(config):
    raise FileNotFoundError(f"config {config} does not exist")
  with open(config) as f:
    raw = json.load(f)
  cfg = textless_config(raw, config) if fmt == "textless" else speechbrain_config(raw, config)
  params = map_state_dict(cfg, load_torch_state(checkpoint, fmt), fmt, checkpoint)
  save(cfg, params, out_dir)
  return cfg


def save(cfg: VocoderConfig, params: dict, out_dir: str) -> None:
  os.makedirs(out_dir, exist_ok=True)
  np.savez(os.path.join(out_dir, PARAMS_NAME + ".tmp.npz"), **params)
  os.replace(os.path.join(out_dir, PARAMS_NAME + ".tmp.npz"), os.path.join(out_dir, PARAMS_NAME))
  cfg.save(out_dir)
