"""Model configuration: one dataclass for Llama-3.x and Qwen2/2.5, read from / written to HF config.json."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

SUPPORTED_ARCHS = ("llama", "qwen2")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "splash")
# what a rematerialised layer keeps for the backward pass (with remat=True; slm_jax.model.transformer.remat_policy):
# nothing (recompute the layer), every matmul without batch dims (the projections), every matmul (the attention
# ones too), the q/k/v projections, those and the attention output (before o_proj)
REMAT_POLICIES = ("nothing_saveable", "dots_with_no_batch_dims_saveable", "dots_saveable", "save_qkv_proj",
                  "save_qkv_attention")
HF_REQUIRED_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads")
# Fields that define the parameter shapes and the function computed; checked on every checkpoint load.
STRUCTURAL_FIELDS = (
    "arch", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling", "tie_word_embeddings",
    "attention_bias", "vocab_pad_multiple")


def check_remat_policy(name: str) -> str:
  """`name` if it is one of REMAT_POLICIES, else a ValueError listing them."""
  if name not in REMAT_POLICIES:
    raise ValueError(f"remat_policy must be one of {', '.join(REMAT_POLICIES)}, got {name!r}")
  return name


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Decoder hyper-parameters (structural) and run-time options (dtypes, attention path, remat)."""
  arch: str = "llama"
  vocab_size: int = 128256          # logical vocabulary (tokenizer length); parameters are padded above it
  hidden_size: int = 3072
  intermediate_size: int = 8192
  num_hidden_layers: int = 28
  num_attention_heads: int = 24
  num_key_value_heads: int = 8
  head_dim: int = 128
  rms_norm_eps: float = 1e-5
  rope_theta: float = 500000.0
  rope_scaling: dict | None = None  # llama3: {factor, low_freq_factor, high_freq_factor, original_max_position_embeddings}
  max_position_embeddings: int = 131072
  tie_word_embeddings: bool = True
  attention_bias: bool = False      # Qwen2: bias on q/k/v
  bos_token_id: int | None = None
  eos_token_id: int | list | None = None
  vocab_pad_multiple: int = 128
  # run-time options (not structural)
  param_dtype: str = "float32"
  dtype: str = "float32"            # compute dtype of activations / matmuls
  attention_impl: str = "auto"      # auto (splash on TPU, cudnn on GPU in bf16, else xla) | xla | cudnn | splash
  remat: bool = False               # recompute each layer in the backward pass, keeping what remat_policy saves
  remat_policy: str = "nothing_saveable"  # one of REMAT_POLICIES
  scan_layers: bool = False         # layer parameters stacked [L, ...], run by one lax.scan (one layer body to compile)

  def __post_init__(self):
    if self.arch not in SUPPORTED_ARCHS:
      raise ValueError(f"unknown architecture {self.arch!r}; supported: {', '.join(SUPPORTED_ARCHS)}")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention_impl must be one of {', '.join(ATTENTION_IMPLS)}, got {self.attention_impl!r}")
    if self.attention_impl == "cudnn" and self.dtype not in ("bfloat16", "float16"):
      raise ValueError(f"attention_impl='cudnn' needs a bfloat16 or float16 compute dtype (cuDNN flash attention "
                       f"has no fp32 kernel), got dtype={self.dtype!r}; use attention_impl='xla' for fp32")
    check_remat_policy(self.remat_policy)
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                       f"num_key_value_heads {self.num_key_value_heads}")

  @property
  def padded_vocab_size(self) -> int:
    m = self.vocab_pad_multiple
    return -(-self.vocab_size // m) * m

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "ModelConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})

  def structural_dict(self) -> dict:
    return {k: getattr(self, k) for k in STRUCTURAL_FIELDS}

  def num_params(self, embeddings: bool = True) -> int:
    """Parameters of the logical (unpadded) model, as HF counts them."""
    h, i, L = self.hidden_size, self.intermediate_size, self.num_hidden_layers
    q = self.num_attention_heads * self.head_dim
    kv = self.num_key_value_heads * self.head_dim
    attn = h * q + 2 * h * kv + q * h + (q + 2 * kv if self.attention_bias else 0)
    per_layer = attn + 3 * h * i + 2 * h
    n = L * per_layer + h
    if embeddings:
      n += self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
    return n

  # ---- Hugging Face config.json -----------------------------------------------------------------
  @classmethod
  def from_hf_dict(cls, d: dict, where: str = "config.json", **overrides) -> "ModelConfig":
    """From a transformers 4.x or 5.x config.json dict (rope at top level or in `rope_parameters`); `where`
    names the file in errors."""
    model_type = d.get("model_type")
    if model_type not in SUPPORTED_ARCHS:
      raise ValueError(f"{where}: unsupported model_type {model_type!r} (architectures {d.get('architectures')}); "
                       f"supported: {', '.join(SUPPORTED_ARCHS)}")
    missing = [k for k in HF_REQUIRED_KEYS if d.get(k) is None]
    if missing:
      raise ValueError(f"{where}: missing key{'s' * (len(missing) > 1)} {', '.join(missing)}")
    rope = dict(d.get("rope_parameters") or {})
    theta = rope.pop("rope_theta", None) or d.get("rope_theta", 10000.0)
    if not rope and d.get("rope_scaling"):
      rope = dict(d["rope_scaling"])
    rope_type = rope.pop("rope_type", None) or rope.pop("type", None) or "default"
    if rope_type == "default":
      scaling = None
    elif rope_type == "llama3":
      scaling = {k: rope[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                      "original_max_position_embeddings")}
    else:
      raise ValueError(f"unsupported rope_type {rope_type!r} (supported: default, llama3)")
    heads = d["num_attention_heads"]
    kw = dict(
        arch=model_type, vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"], num_hidden_layers=d["num_hidden_layers"],
        num_attention_heads=heads, num_key_value_heads=d.get("num_key_value_heads") or heads,
        head_dim=d.get("head_dim") or d["hidden_size"] // heads, rms_norm_eps=d.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta), rope_scaling=scaling,
        max_position_embeddings=d.get("max_position_embeddings", 2048),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        attention_bias=True if model_type == "qwen2" else bool(d.get("attention_bias", False)),
        bos_token_id=d.get("bos_token_id"), eos_token_id=d.get("eos_token_id"))
    if d.get("mlp_bias"):
      raise ValueError("mlp_bias=True is not supported")
    kw.update(overrides)
    return cls(**kw)

  @classmethod
  def from_hf_dir(cls, path: str, **overrides) -> "ModelConfig":
    f = os.path.join(path, "config.json")
    if not os.path.exists(f):
      raise FileNotFoundError(f"no config.json in {path}")
    with open(f) as fh:
      return cls.from_hf_dict(json.load(fh), where=f, **overrides)

  def to_hf_dict(self, dtype: str = "bfloat16") -> dict:
    rope: dict[str, Any] = {"rope_theta": self.rope_theta}
    if self.rope_scaling:
      rope.update(rope_type="llama3", **self.rope_scaling)
    else:
      rope["rope_type"] = "default"
    d = dict(
        architectures=["LlamaForCausalLM" if self.arch == "llama" else "Qwen2ForCausalLM"],
        model_type=self.arch, vocab_size=self.vocab_size, hidden_size=self.hidden_size,
        intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
        num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
        head_dim=self.head_dim, hidden_act="silu", rms_norm_eps=self.rms_norm_eps,
        max_position_embeddings=self.max_position_embeddings, rope_parameters=rope,
        tie_word_embeddings=self.tie_word_embeddings, bos_token_id=self.bos_token_id,
        eos_token_id=self.eos_token_id, dtype=dtype, attention_dropout=0.0, use_cache=True)
    if self.arch == "llama":
      d.update(attention_bias=self.attention_bias, mlp_bias=False)
    else:
      d.update(use_sliding_window=False, sliding_window=None)
    return d


_LLAMA3_SCALING = dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
_LLAMA3 = dict(arch="llama", vocab_size=128256, rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=_LLAMA3_SCALING,
               max_position_embeddings=131072, tie_word_embeddings=True, attention_bias=False, bos_token_id=128000,
               eos_token_id=128001)
_QWEN2_5 = dict(arch="qwen2", vocab_size=151936, rms_norm_eps=1e-6, rope_theta=1e6, rope_scaling=None,
                tie_word_embeddings=True, attention_bias=True, bos_token_id=151643, eos_token_id=151643)

PRESETS: dict[str, ModelConfig] = {  # sizes from each model's config.json on the Hugging Face hub
    "llama3.2-1b": ModelConfig(**_LLAMA3, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                               num_attention_heads=32, num_key_value_heads=8, head_dim=64),
    "llama3.2-3b": ModelConfig(**_LLAMA3, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                               num_attention_heads=24, num_key_value_heads=8, head_dim=128),
    "qwen2.5-0.5b": ModelConfig(**_QWEN2_5, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                num_attention_heads=14, num_key_value_heads=2, head_dim=64,
                                max_position_embeddings=32768),
    "qwen2.5-1.5b": ModelConfig(**_QWEN2_5, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                num_attention_heads=12, num_key_value_heads=2, head_dim=128,
                                max_position_embeddings=131072),
    "qwen2.5-3b": ModelConfig(**_QWEN2_5, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                              num_attention_heads=16, num_key_value_heads=2, head_dim=128,
                              max_position_embeddings=32768),
    "qwen2.5-7b": ModelConfig(**{**_QWEN2_5, "vocab_size": 152064, "tie_word_embeddings": False}, hidden_size=3584,
                              intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                              num_key_value_heads=4, head_dim=128, max_position_embeddings=131072),
    # tiny sizes for tests and the demo
    "tiny-llama": ModelConfig(**{**_LLAMA3, "vocab_size": 1024, "bos_token_id": 0, "eos_token_id": 1},
                              hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16),
    "tiny-qwen2": ModelConfig(**{**_QWEN2_5, "vocab_size": 1024, "tie_word_embeddings": False, "bos_token_id": 0,
                                 "eos_token_id": 1}, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                              max_position_embeddings=32768),
}


def preset(name: str, **overrides) -> ModelConfig:
  if name not in PRESETS:
    raise KeyError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
  return PRESETS[name].replace(**overrides)
