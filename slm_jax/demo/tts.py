"""Speech synthesis with exact word times, for the demo data (not part of unit extraction).

flite is called in-process through ctypes: one synthesis per utterance (natural prosody; libc's rand(), which
flite's voices use for excitation noise, is reseeded each time, so the audio is deterministic whatever ran
before), and the word times come from flite's own utterance structure (Token -> Word -> Syllable -> Segment),
so they are exact, not estimated.
Voices: the flite voices shipped by Debian's `flite` package (slt, awb, rms, kal16; all 16 kHz).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
import shutil
import subprocess

import numpy as np

FLITE_VOICES = ("slt", "awb", "rms", "kal16")
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib")


class TTSUnavailable(RuntimeError):
  pass


@dataclasses.dataclass
class Synthesis:
  audio: np.ndarray  # float32 [-1, 1], mono
  sample_rate: int
  words: list  # [(text, start_s, end_s)], text as in the input (punctuation kept, no leading space)
  phones: list  # flite's phone names, pauses removed


def ensure_flite(install: bool = True) -> None:
  """Installs Debian's flite with apt-get when it is missing and we are root (a no-op otherwise)."""
  if _find_lib("libflite.so.1") or not install:
    return
  if shutil.which("apt-get") is None or os.geteuid() != 0:
    raise TTSUnavailable("flite is not installed and apt-get cannot run here: apt-get install -y flite espeak-ng")
  env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
  subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
  subprocess.run(["apt-get", "install", "-y", "-qq", "flite", "espeak-ng"], check=True, env=env, capture_output=True)


def _find_lib(name: str) -> str | None:
  for d in _LIB_DIRS:
    p = os.path.join(d, name)
    if os.path.exists(p):
      return p
  return None


class _Wave(ctypes.Structure):
  _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
              ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


class Flite:
  """In-process flite. `synthesize(text, voice)` -> Synthesis with word times from flite's segment relation."""

  def __init__(self):
    lib = _find_lib("libflite.so.1")
    if lib is None:
      raise TTSUnavailable("libflite.so.1 not found (apt-get install -y flite)")
    self._fl = fl = ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    for dep in ("libflite_usenglish.so.1", "libflite_cmulex.so.1"):
      ctypes.CDLL(_find_lib(dep), mode=ctypes.RTLD_GLOBAL)
    vp, cp, fp = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_float
    for name, res, args in (("flite_synth_text", vp, [cp, vp]), ("utt_wave", ctypes.POINTER(_Wave), [vp]),
                            ("utt_relation", vp, [vp, cp]), ("relation_head", vp, [vp]), ("item_next", vp, [vp]),
                            ("item_feat_string", cp, [vp, cp]), ("ffeature_float", fp, [vp, cp]),
                            ("ffeature_string", cp, [vp, cp]), ("delete_utterance", None, [vp])):
      f = getattr(fl, name)
      f.restype, f.argtypes = res, args
    fl.flite_init()
    self._libc = ctypes.CDLL(None)  # flite's clustergen voices draw excitation noise from libc rand()
    self._voices = {}

  def voice(self, name: str):
    if name not in self._voices:
      lib = _find_lib(f"libflite_cmu_us_{name}.so.1")
      if lib is None:
        raise TTSUnavailable(f"flite voice {name!r} not installed (known: {FLITE_VOICES})")
      vlib = ctypes.CDLL(lib)
      reg = getattr(vlib, f"register_cmu_us_{name}")
      reg.restype, reg.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
      self._voices[name] = (vlib, reg(None))
    return self._voices[name][1]

  def synthesize(self, text: str, voice: str = "slt") -> Synthesis:
    """One utterance. Input tokens that flite does not speak (e.g. `--`) are merged into the previous word."""
    fl = self._fl
    voice_ptr = self.voice(voice)
    self._libc.srand(1)  # same audio for the same text whatever was synthesised before (deterministic)
    utt = fl.flite_synth_text(text.encode("utf-8"), voice_ptr)
    try:
      w = fl.utt_wave(utt).contents
      audio = np.ctypeslib.as_array(w.samples, shape=(w.num_samples,)).astype(np.float32) / 32768.0
      sr = int(w.sample_rate)
      tokens = []  # (name, (start, end) or None when flite speaks nothing for it)
      item = fl.relation_head(fl.utt_relation(utt, b"Token"))
      while item:
        name = (fl.item_feat_string(item, b"name") or b"").decode("utf-8", "replace")
        times = None
        if fl.ffeature_string(item, b"daughter1.name") not in (None, b"0"):
          times = (fl.ffeature_float(item, b"daughter1.R:SylStructure.daughter1.daughter1.R:Segment.p.end"),
                   fl.ffeature_float(item, b"daughtern.R:SylStructure.daughtern.daughtern.R:Segment.end"))
        tokens.append((name, times))
        item = fl.item_next(item)
      phones = []
      item = fl.relation_head(fl.utt_relation(utt, b"Segment"))
      while item:
        name = fl.item_feat_string(item, b"name").decode()
        if name != "pau":
          phones.append(name)
        item = fl.item_next(item)
    finally:
      fl.delete_utterance(utt)
    return Synthesis(audio, sr, _attach_text(text.split(), tokens, voice, text), phones)


def _attach_text(pieces: list[str], tokens: list, voice: str, text: str) -> list:
  """Pairs flite's tokens with the input's whitespace-separated pieces (flite's token name is the piece without
  its surrounding punctuation; pure-punctuation pieces may have no token). Unspoken pieces join the previous word."""
  words, j = [], 0
  for piece in pieces:
    times = None
    if j < len(tokens) and (tokens[j][0] in piece if tokens[j][0] else not any(c.isalnum() for c in piece)):
      times = tokens[j][1]
      j += 1
    if times is not None and words:  # keep words in order (flite reports 0 for a start it cannot see)
      times = (max(times[0], words[-1][2]), times[1])
    if times is None or times[1] <= times[0]:
      if words:
        t, s, e = words[-1]
        words[-1] = (f"{t} {piece}", s, e)
      continue
    words.append((piece, float(times[0]), float(times[1])))
  if j != len(tokens):
    raise RuntimeError(f"flite ({voice}): could not pair its tokens {[t[0] for t in tokens]} with {text!r}")
  return words
