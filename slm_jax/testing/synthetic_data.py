"""Synthetic slamkit-format inputs shaped like SIMS data, for tests and benchmarks (not used by the library).

Utterances: word alignments with consistent times and deduplicated units whose durations cover the audio
(about 17 units per second, 25 Hz frames); text documents of random sentences. Not speech: only the shapes.
"""
from __future__ import annotations

import json
import os

import numpy as np

from slm_jax.frames import FRAME_S

WORDS = ("the of and to a in that it was he for on are as with his they at be this from have or one had by "
         "but not what all were when we there can an your which their said if do will each about how up out them "
         "then she many some so these would other into has more her two like him see time could no make than "
         "first been its who now people my made over did down only way find use may water long little very after "
         "words called just where most know get through back much before go good new write our used me man too "
         "any day same right look think also around another came come work three word must because does part "
         "even place well such here take why things help put years different away again off went old number "
         "great tell men say small every found still between name should home big give air line set own under "
         "read last never us left end along while might next sound below saw something thought both few those "
         "always looked show large often together asked house don't world going want school important until form "
         "food keep children feet land side without boy once animals life enough took sometimes four head above "
         "kind began almost live page got earth need far hand high year mother light parts country father let "
         "night following picture being study second eyes soon times story boys since white days ever paper hard "
         "near sentence better best across during today others however sure means knew it's try told young miles "
         "sun ways thing whole hear example heard several change answer room sea against top turned learn point "
         "city play toward five using himself usually money seen didn't car morning I'm body upon family later "
         "turn move face door cut done group true leave color red friends pulled gone open Anne Marilla Avonlea "
         "Matthew Cuthbert brook 1908 3.5 well-known").split()


def aligned_utterance(rng: np.random.Generator, file_name: str, seconds: float, units_per_second: float = 17.5,
                      words_per_second: float = 2.7, num_units: int = 500) -> tuple[dict, dict]:
  """(features line, alignment JSON) of one utterance with consistent unit durations and word times."""
  frames = max(2, int(round(seconds * 25)))
  n_units = int(np.clip(round(frames * units_per_second / 25), 1, frames))
  cuts = np.sort(rng.choice(np.arange(1, frames), n_units - 1, replace=False)) if n_units > 1 else np.zeros(0, int)
  durations = np.diff(np.concatenate([[0], cuts, [frames]]))
  units = rng.integers(0, num_units, n_units)
  units[1:][units[1:] == units[:-1]] = (units[1:][units[1:] == units[:-1]] + 1) % num_units  # deduplicated
  audio = frames * FRAME_S
  n_words = max(1, int(round(seconds * words_per_second)))
  bounds = np.sort(rng.uniform(0.0, audio, 2 * n_words))
  bounds = np.round(bounds, 2)  # Whisper-like 10 ms resolution
  aligned = [[" " + str(WORDS[rng.integers(len(WORDS))]), float(bounds[2 * i]), float(bounds[2 * i + 1])]
             for i in range(n_words)]
  features = {"units": units.tolist(), "duration": durations.tolist(), "file_name": file_name}
  return features, {"file_name": file_name, "aligned_text": aligned}


def text_document(rng: np.random.Generator, num_words: int) -> str:
  words = [str(WORDS[i]) for i in rng.integers(0, len(WORDS), num_words)]
  out, sentence_start = [], True
  for i, w in enumerate(words):
    out.append(w.capitalize() if sentence_start else w)
    sentence_start = rng.random() < 0.08
    if sentence_start:
      out[-1] += "."
    if rng.random() < 0.01:
      out[-1] += "\n"
  return " ".join(out) + "."


def write_corpus(out_dir: str, *, num_utterances: int, num_text: int, seed: int = 0,
                 seconds: tuple[float, float] = (5.0, 30.0), text_words: tuple[int, int] = (50, 2000),
                 alignment_dir: str | None = None) -> dict[str, str]:
  """features.jsonl (+ one alignment JSON per utterance in alignment_dir, default out_dir/align) and text.jsonl."""
  rng = np.random.default_rng(seed)
  alignment_dir = alignment_dir or os.path.join(out_dir, "align")
  os.makedirs(alignment_dir, exist_ok=True)
  features_path, text_path = os.path.join(out_dir, "features.jsonl"), os.path.join(out_dir, "text.jsonl")
  with open(features_path, "w") as f:
    for i in range(num_utterances):
      name = f"audio/utt{i:07d}.flac"
      feats, align = aligned_utterance(rng, name, float(rng.uniform(*seconds)))
      f.write(json.dumps(feats) + "\n")
      with open(os.path.join(alignment_dir, f"utt{i:07d}.json"), "w") as g:
        json.dump(align, g)
  with open(text_path, "w") as f:
    for i in range(num_text):
      f.write(json.dumps({"id": f"text{i:07d}", "text": text_document(rng, int(rng.integers(*text_words)))}) + "\n")
  return {"features": features_path, "text": text_path, "alignment_dir": alignment_dir}
