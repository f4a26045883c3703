"""Tiny random transformers models paired with our ModelConfig (shared by tests)."""
from __future__ import annotations

import torch
import transformers

from slm_jax.model.config import ModelConfig


def hf_config(cfg: ModelConfig):
  d = {k: v for k, v in cfg.to_hf_dict("float32").items() if k not in ("architectures", "model_type", "dtype")}
  cls = transformers.LlamaConfig if cfg.arch == "llama" else transformers.Qwen2Config
  return cls(**d)


def torch_model(cfg: ModelConfig, seed: int = 0):
  torch.manual_seed(seed)
  hf = hf_config(cfg)
  cls = transformers.LlamaForCausalLM if cfg.arch == "llama" else transformers.Qwen2ForCausalLM
  model = cls(hf).eval()
  with torch.no_grad():  # non-trivial norms and biases, so a mapping mistake cannot hide behind ones / zeros
    for name, p in model.named_parameters():
      if name.endswith("norm.weight") or name.endswith(".bias"):
        p.add_(0.1 * torch.randn_like(p))
  return model
