"""Unit HiFi-GAN settings: one dataclass for both source layouts (textlesslib / slamkit and speechbrain)."""
from __future__ import annotations

import dataclasses
import json
import os

CONFIG_NAME = "vocoder.json"
PARAMS_NAME = "params.npz"


@dataclasses.dataclass(frozen=True)
class VocoderConfig:
  num_embeddings: int
  embedding_dim: int
  upsample_rates: tuple
  upsample_kernel_sizes: tuple
  upsample_initial_channel: int
  resblock_kernel_sizes: tuple
  resblock_dilation_sizes: tuple  # one tuple of dilations per resblock kernel size
  resblock_type: str = "1"  # "1": convs1/convs2 pairs (HiFi-GAN V1); "2": single convs
  padding_mode: str = "zeros"  # "zeros" (textlesslib / fairseq) or "reflect" (speechbrain's Conv1d)
  conv_post_bias: bool = True
  dur_predictor: bool = False
  dur_hidden_dim: int = 128
  dur_kernel_size: int = 3
  dur_paddings: tuple = (1, 1)  # (conv1, conv2) padding on each side; textlesslib hard-codes conv2's to 1
  dur_layer_norm: bool = True  # textlesslib: LayerNorm after each conv; speechbrain: none
  sample_rate: int = 16000
  source_format: str = ""

  def __post_init__(self):
    if self.resblock_type not in ("1", "2"):
      raise ValueError(f"resblock_type must be '1' or '2', got {self.resblock_type!r}")
    if self.padding_mode not in ("zeros", "reflect"):
      raise ValueError(f"padding_mode must be 'zeros' or 'reflect', got {self.padding_mode!r}")
    if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
      raise ValueError("upsample_rates and upsample_kernel_sizes differ in length")
    if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
      raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
    for k in tuple(self.resblock_kernel_sizes) + (self.dur_kernel_size,):
      if k % 2 == 0:
        raise ValueError(f"kernel size {k} is even: 'same' padding needs odd kernels")
    if self.dur_predictor and (2 * self.dur_paddings[0] != self.dur_kernel_size - 1
                               or 2 * self.dur_paddings[1] != self.dur_kernel_size - 1):
      raise ValueError(f"duration predictor paddings {self.dur_paddings} do not keep the length with kernel "
                       f"{self.dur_kernel_size}")

  @property
  def hop_length(self) -> int:
    """Output samples per input frame (for the usual kernel/stride pairs with even k - u)."""
    hop = 1
    for u in self.upsample_rates:
      hop *= u
    return hop

  def num_samples(self, frames):
    """Exact output samples for `frames` input frames (torch ConvTranspose1d length arithmetic)."""
    return self.stage_length(frames, len(self.upsample_rates))

  def min_frames(self) -> int:
    """Fewest input frames reflect padding allows (torch: padding must be shorter than the input)."""
    if self.padding_mode != "reflect":
      return 1
    pad = max(d * (k - 1) // 2 for k, ds in zip(self.resblock_kernel_sizes, self.resblock_dilation_sizes)
              for d in ds)
    frames = 4  # conv_pre: kernel 7, padding 3
    while any(self.stage_length(frames, i + 1) <= pad for i in range(len(self.upsample_rates))):
      frames += 1
    return frames

  def stage_length(self, frames, stages: int):
    """Length after the first `stages` upsampling layers."""
    n = frames
    for u, k in list(zip(self.upsample_rates, self.upsample_kernel_sizes))[:stages]:
      n = (n - 1) * u - 2 * ((k - u) // 2) + k
    return n

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "VocoderConfig":
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
      raise ValueError(f"unknown vocoder config fields: {unknown}")
    kw = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
          for k, v in d.items()}
    return cls(**kw)

  def save(self, out_dir: str) -> str:
    path = os.path.join(out_dir, CONFIG_NAME)
    with open(path, "w") as f:
      json.dump(self.to_dict(), f, indent=2)
    return path

  @classmethod
  def load(cls, vocoder_dir: str) -> "VocoderConfig":
    path = os.path.join(vocoder_dir, CONFIG_NAME)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} does not exist: convert a checkpoint with tools/convert_vocoder.py first")
    with open(path) as f:
      return cls.from_dict(json.load(f))
