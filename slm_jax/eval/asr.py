"""Speech recognition for GenPPL: Whisper through faster-whisper (a CTranslate2 folder; `pip install .[asr]`) or
transformers (a Whisper HF folder), batched over clips; plus word error rate.

Clips are 16 kHz float waveforms of at most 30 s (Whisper's window; longer ones are cut, with a warning).
Decoding: beam search (faster-whisper, beam 5) or greedy (transformers), no timestamps, language fixed.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Sequence

import numpy as np

SAMPLE_RATE = 16000
MAX_SECONDS = 30


def detect_backend(model_dir: str) -> str:
  if not os.path.isdir(model_dir):
    raise FileNotFoundError(f"ASR model folder {model_dir} does not exist")
  if os.path.isfile(os.path.join(model_dir, "model.bin")):
    return "faster-whisper"
  if any(os.path.isfile(os.path.join(model_dir, f)) for f in ("model.safetensors", "pytorch_model.bin",
                                                               "model.safetensors.index.json")):
    return "transformers"
  raise ValueError(f"{model_dir}: neither a CTranslate2 Whisper folder (model.bin) nor a transformers one "
                   "(model.safetensors)")


class Transcriber:
  def __init__(self, model_dir: str, backend: str = "auto", batch_size: int = 8, language: str = "en",
               beam_size: int = 5, compute_type: str = "int8", cpu_threads: int = 0):
    self.backend = detect_backend(model_dir) if backend == "auto" else backend
    self.batch_size, self.language, self.beam_size = batch_size, language, beam_size
    if self.backend == "faster-whisper":
      try:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
      except ImportError as e:
        raise ImportError("faster-whisper is not installed: pip install -e '.[asr]'") from e
      self.model = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads)
      self.tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                                 language=language)
    elif self.backend == "transformers":
      import transformers
      self.processor = transformers.WhisperProcessor.from_pretrained(model_dir)
      self.model = transformers.WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    else:
      raise ValueError(f"ASR backend must be auto, faster-whisper or transformers, got {backend!r}")

  def __call__(self, wavs: Sequence[np.ndarray]) -> list[str]:
    wavs = [self._clip(np.asarray(w, np.float32), n) for n, w in enumerate(wavs)]
    out = []
    for start in range(0, len(wavs), self.batch_size):
      batch = wavs[start:start + self.batch_size]
      out.extend(self._ct2(batch) if self.backend == "faster-whisper" else self._hf(batch))
    return [t.strip() for t in out]

  @staticmethod
  def _clip(w: np.ndarray, n: int) -> np.ndarray:
    if w.ndim != 1:
      raise ValueError(f"clip {n}: expected a mono waveform, got shape {w.shape}")
    if len(w) > MAX_SECONDS * SAMPLE_RATE:
      logging.warning("clip %d: %.1f s is longer than Whisper's 30 s window; cut", n, len(w) / SAMPLE_RATE)
      w = w[:MAX_SECONDS * SAMPLE_RATE]
    return w

  def _ct2(self, batch) -> list[str]:
    import ctranslate2
    from faster_whisper.audio import pad_or_trim
    feats = np.stack([pad_or_trim(self.model.feature_extractor(w)) for w in batch]).astype(np.float32)
    prompt = list(self.tokenizer.sot_sequence) + [self.tokenizer.no_timestamps]
    res = self.model.model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)),
                                    [prompt] * len(batch), beam_size=self.beam_size, max_length=448,
                                    suppress_blank=True, suppress_tokens=[-1])
    return [self.tokenizer.decode([t for t in r.sequences_ids[0] if t < self.tokenizer.eot]) for r in res]

  def _hf(self, batch) -> list[str]:
    import torch
    inputs = self.processor(list(batch), sampling_rate=SAMPLE_RATE, return_tensors="pt")
    with torch.no_grad():
      ids = self.model.generate(inputs.input_features, language=self.language, task="transcribe")
    return self.processor.batch_decode(ids, skip_special_tokens=True)


def normalize_words(text: str) -> list[str]:
  """Lower case, digits and letters only (apostrophes kept inside words), split on the rest."""
  return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text.lower())


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
  """(substitutions + deletions + insertions, reference words): Levenshtein distance over normalised words."""
  r, h = normalize_words(ref), normalize_words(hyp)
  prev = list(range(len(h) + 1))
  for i, rw in enumerate(r, start=1):
    cur = [i] + [0] * len(h)
    for j, hw in enumerate(h, start=1):
      cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
    prev = cur
  return prev[-1], len(r)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
  """Corpus word error rate: total edits / total reference words."""
  if len(refs) != len(hyps):
    raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
  errs = [word_errors(r, h) for r, h in zip(refs, hyps)]
  return sum(e for e, _ in errs) / max(1, sum(n for _, n in errs))
