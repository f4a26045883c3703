"""Speech recognition for GenPPL: Whisper through faster-whisper (a CTranslate2 folder; `pip install .[asr]`) or
transformers (a Whisper HF folder), batched over clips; plus word error rate.

Clips are 16 kHz float waveforms of at most 30 s (Whisper's window; longer ones are cut, with a warning).
Both backends decode by the same rules (beam search's stopping rule aside), so that with greedy search the same
weights give the same tokens in either (checked by tests/test_eval_asr_backends.py on one random Whisper saved in
both formats):
- log-mel features as faster-whisper computes them: the clip plus 160 zero samples, log10 mel power floored at
  8 below its maximum, then zero features up to 3,000 frames (openai-whisper and transformers' own pipeline pad
  the audio instead, which gives silence frames rather than zeros);
- the prompt <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>; the model's suppress_tokens at every
  step and its begin_suppress_tokens (blank, end of text) at the first;
- at most `max_new_tokens` tokens (224 by default: openai-whisper's sample_len, half the 448 decoder positions);
- `beam_size` hypotheses (5 by default; 1 is greedy search, the same in both). Beam search in both stops once
  beam_size hypotheses have ended (CTranslate2's patience 1, transformers' early_stopping=True) and ranks them by
  log-probability over length, but transformers counts the end of text in the length and CTranslate2 (like
  openai-whisper) does not, so beam search transcripts of the two may differ;
- the transcript is the generated tokens before end of text, less every special and timestamp token (ids from
  end of text on), detokenized by the tokenizer's `tokenizers` decoder.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Sequence

import numpy as np

SAMPLE_RATE = 16000
MAX_SECONDS = 30
HOP = 160
FRAMES = MAX_SECONDS * SAMPLE_RATE // HOP
MAX_NEW_TOKENS = 224


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
               beam_size: int = 5, compute_type: str = "int8", cpu_threads: int = 0,
               max_new_tokens: int = MAX_NEW_TOKENS):
    self.backend = detect_backend(model_dir) if backend == "auto" else backend
    self.batch_size, self.language, self.beam_size = batch_size, language, beam_size
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
      raise ValueError(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS}], got {max_new_tokens}")
    self.max_new_tokens = max_new_tokens
    if self.backend == "faster-whisper":
      try:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
      except ImportError as e:
        raise ImportError("faster-whisper is not installed: pip install -e '.[asr]'") from e
      self.model = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads)
      tok = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                      language=language)
      self.prompt = list(tok.sot_sequence) + [tok.no_timestamps]
      self.eot, self._decode = tok.eot, self.model.hf_tokenizer.decode
    elif self.backend == "transformers":
      import transformers
      self.processor = transformers.WhisperProcessor.from_pretrained(model_dir)
      self.model = transformers.WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
      gc, tok = self.model.generation_config, self.processor.tokenizer
      multilingual = getattr(gc, "is_multilingual", self.model.config.vocab_size >= 51865)
      names = ["<|startoftranscript|>"] + ([f"<|{language}|>", "<|transcribe|>"] if multilingual else [])
      self.prompt = [tok.convert_tokens_to_ids(t) for t in names + ["<|notimestamps|>"]]
      self.eot = tok.convert_tokens_to_ids("<|endoftext|>")
      if self.eot in self.prompt:
        raise ValueError(f"{model_dir}: the tokenizer has no token for one of {names + ['<|notimestamps|>']} "
                         f"(language {language!r})")
      self.suppress, self.begin_suppress = list(gc.suppress_tokens or []), list(gc.begin_suppress_tokens or [])
      self._decode = tok.backend_tokenizer.decode
    else:
      raise ValueError(f"ASR backend must be auto, faster-whisper or transformers, got {backend!r}")

  def __call__(self, wavs: Sequence[np.ndarray]) -> list[str]:
    return [self._decode(ids).strip() for ids in self.token_ids(wavs)]

  def token_ids(self, wavs: Sequence[np.ndarray]) -> list[list[int]]:
    """Each clip's transcript as token ids: the generated tokens before end of text, less special and timestamp
    tokens."""
    wavs = [self._clip(np.asarray(w, np.float32), n) for n, w in enumerate(wavs)]
    out = []
    for start in range(0, len(wavs), self.batch_size):
      batch = wavs[start:start + self.batch_size]
      seqs = self._ct2(batch) if self.backend == "faster-whisper" else self._hf(batch)
      for seq in seqs:
        seq = list(seq)
        seq = seq[:seq.index(self.eot)] if self.eot in seq else seq
        out.append([t for t in seq if t < self.eot])
    return out

  @staticmethod
  def _clip(w: np.ndarray, n: int) -> np.ndarray:
    if w.ndim != 1:
      raise ValueError(f"clip {n}: expected a mono waveform, got shape {w.shape}")
    if len(w) > MAX_SECONDS * SAMPLE_RATE:
      logging.warning("clip %d: %.1f s is longer than Whisper's 30 s window; cut", n, len(w) / SAMPLE_RATE)
      w = w[:MAX_SECONDS * SAMPLE_RATE]
    return w

  def _ct2(self, batch) -> list[list[int]]:
    import ctranslate2
    from faster_whisper.audio import pad_or_trim
    feats = np.stack([pad_or_trim(self.model.feature_extractor(w)) for w in batch]).astype(np.float32)
    # CTranslate2's Whisper generate makes at most max_length // 2 new tokens (openai-whisper's sample_len rule;
    # measured: max_length 10 -> 5 tokens, 448 -> 224, whatever the prompt length)
    res = self.model.model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)),
                                    [self.prompt] * len(batch), beam_size=self.beam_size,
                                    max_length=2 * self.max_new_tokens, suppress_blank=True, suppress_tokens=[-1])
    return [r.sequences_ids[0] for r in res]

  def _log_mel(self, w: np.ndarray) -> np.ndarray:
    """faster-whisper's features (see the module docstring) with transformers' feature extractor."""
    fe = self.processor.feature_extractor
    f = fe(np.pad(w, (0, HOP)), sampling_rate=SAMPLE_RATE, padding="do_not_pad", return_tensors="np")
    f = f.input_features[0][:, :FRAMES]
    return np.pad(f, ((0, 0), (0, FRAMES - f.shape[1])))

  def _hf(self, batch) -> list[list[int]]:
    import torch
    import transformers
    feats = torch.from_numpy(np.stack([self._log_mel(w) for w in batch]).astype(np.float32))
    # transformers' own Whisper generate cuts the output into segments at timestamp tokens and decodes again from
    # there, even with return_timestamps=False; the plain encoder-decoder generate decodes the one window as
    # CTranslate2 does
    with torch.no_grad():
      ids = transformers.GenerationMixin.generate(
          self.model, input_features=feats, decoder_input_ids=torch.tensor([self.prompt] * len(batch)),
          num_beams=self.beam_size, early_stopping=self.beam_size > 1, length_penalty=1.0, do_sample=False,
          repetition_penalty=1.0, no_repeat_ngram_size=0, max_length=len(self.prompt) + self.max_new_tokens,
          suppress_tokens=self.suppress, begin_suppress_tokens=self.begin_suppress, eos_token_id=self.eot,
          pad_token_id=self.eot)
    return ids[:, len(self.prompt):].tolist()


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
