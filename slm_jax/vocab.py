"""The speech-text vocabulary of docs/reference.md §2: unit and marker ids, tokenizer extension, text+units -> ids.

Layout: the base tokenizer's ids unchanged, then `<Un0>`..`<Un{n-1}>`, then `<speech>`, then `<text>`.
Units and markers are mapped by id arithmetic, never through BPE.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

import numpy as np

KIND_TEXT, KIND_UNIT, KIND_MARKER = 0, 1, 2
KIND_NAMES = ("text", "unit", "marker")
SPEECH_MARKER, TEXT_MARKER = "<speech>", "<text>"
UNIT_RE = re.compile(r"<Un(\d+)>")  # one unit token; group 1 is the unit number
_PIECE_RE = re.compile(UNIT_RE.pattern + "|<speech>|<text>")


def unit_token(i: int) -> str:
  return f"<Un{i}>"


def parse_units(s: str) -> np.ndarray:
  """The unit numbers of the `<UnN>` tokens in `s` ("<Un3><Un49>..."), in order, as int64; other text is skipped."""
  return np.asarray([int(m) for m in UNIT_RE.findall(s)], np.int64)


def only_units(s: str) -> bool:
  """Whether `s` holds nothing but `<UnN>` tokens."""
  return not UNIT_RE.sub("", s)


@dataclasses.dataclass(frozen=True)
class VocabLayout:
  """Where units and markers sit in an extended vocabulary (docs/reference.md §2)."""
  base_size: int
  num_units: int = 500
  bos_id: int | None = None  # the base tokenizer's BOS, prepended when the base model adds one
  eos_id: int | None = None

  @property
  def unit_offset(self) -> int:
    return self.base_size

  @property
  def speech_id(self) -> int:
    return self.base_size + self.num_units

  @property
  def text_id(self) -> int:
    return self.base_size + self.num_units + 1

  @property
  def size(self) -> int:
    return self.base_size + self.num_units + (2 if self.num_units else 0)

  def unit_ids(self, units: Sequence[int] | np.ndarray) -> np.ndarray:
    units = np.asarray(units, dtype=np.int64)
    if units.size and (units.min() < 0 or units.max() >= self.num_units):
      raise ValueError(f"unit ids must lie in 0..{self.num_units - 1}, got {units.min()}..{units.max()}")
    return (units + self.unit_offset).astype(np.int32)

  def marker_id(self, modality: str) -> int:
    return {"speech": self.speech_id, "text": self.text_id}[modality]

  def kinds(self, ids: np.ndarray) -> np.ndarray:
    """KIND_TEXT / KIND_UNIT / KIND_MARKER for each id."""
    ids = np.asarray(ids)
    kind = np.full(ids.shape, KIND_TEXT, np.int8)
    kind[(ids >= self.unit_offset) & (ids < self.speech_id)] = KIND_UNIT
    kind[(ids == self.speech_id) | (ids == self.text_id)] = KIND_MARKER
    return kind

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "VocabLayout":
    return cls(**d)


LLAMA3_LAYOUT = VocabLayout(base_size=128256, bos_id=128000, eos_id=128001)
QWEN2_5_LAYOUT = VocabLayout(base_size=151665, bos_id=None, eos_id=151643)


def added_tokens(num_units: int = 500) -> list[str]:
  return [unit_token(i) for i in range(num_units)] + [SPEECH_MARKER, TEXT_MARKER]


def extend_tokenizer(tokenizer, num_units: int = 500) -> VocabLayout:
  """Appends units and markers to a HF tokenizer as ordinary added tokens; returns the layout.

  Idempotent: a tokenizer that already carries the tokens (a slamkit or slm_jax checkpoint) is checked, not grown.
  """
  names = added_tokens(num_units)
  vocab = tokenizer.get_vocab()
  if names[0] in vocab:
    base = vocab[names[0]]
  else:
    base = len(tokenizer)
    tokenizer.add_tokens(names, special_tokens=False)
  for i, name in enumerate(names):
    got = tokenizer.convert_tokens_to_ids(name)
    if got != base + i:
      raise ValueError(f"tokenizer maps {name} to {got}, expected {base + i} (docs/reference.md §2 layout)")
  bos = tokenizer.bos_token_id
  return VocabLayout(base_size=base, num_units=num_units, bos_id=bos, eos_id=tokenizer.eos_token_id)


def units_to_string(units: Iterable[int]) -> str:
  """slamkit's `audio_repr` for bare units: `<Un3><Un49>...`."""
  return "".join(unit_token(int(u)) for u in units)


class Encoder:
  """Turns docs/reference.md §4 pieces (or strings) into ids: text through the HF tokenizer, units/markers by id."""

  def __init__(self, tokenizer, layout: VocabLayout, add_bos: bool | None = None):
    self.tokenizer = tokenizer
    self.layout = layout
    self.add_bos = layout.bos_id is not None if add_bos is None else add_bos

  def text_ids(self, text: str) -> list[int]:
    return list(self.tokenizer.encode(text, add_special_tokens=False))

  def encode_pieces(self, pieces: Sequence[tuple[str, object]], bos: bool | None = None) -> np.ndarray:
    """pieces: ("text", str) | ("units", ints) | ("marker", "speech"|"text")."""
    out: list[int] = []
    if (self.add_bos if bos is None else bos) and self.layout.bos_id is not None:
      out.append(self.layout.bos_id)
    for kind, value in pieces:
      if kind == "text":
        out.extend(self.text_ids(value))
      elif kind == "units":
        out.extend(self.layout.unit_ids(value).tolist())
      elif kind == "marker":
        out.append(self.layout.marker_id(value))
      else:
        raise ValueError(f"unknown piece kind {kind!r}")
    return np.asarray(out, np.int32)

  def encode_string(self, s: str, bos: bool | None = None) -> np.ndarray:
    """A docs/reference.md §4 string (`<text> The cat<speech><Un3>...`) -> ids, without BPE on units or markers."""
    return self.encode_pieces(parse_string(s), bos=bos)

  def decode(self, ids: Sequence[int]) -> str:
    """ids -> docs/reference.md §4 string (BOS dropped)."""
    parts, text = [], []
    def flush():
      if text:
        parts.append(self.tokenizer.decode(text))
        text.clear()
    for i in map(int, ids):
      if i == self.layout.bos_id:
        continue
      if self.layout.unit_offset <= i < self.layout.speech_id:
        flush(); parts.append(unit_token(i - self.layout.unit_offset))
      elif i == self.layout.speech_id:
        flush(); parts.append(SPEECH_MARKER)
      elif i == self.layout.text_id:
        flush(); parts.append(TEXT_MARKER)
      else:
        text.append(i)
    flush()
    return "".join(parts)


def parse_string(s: str) -> list[tuple[str, object]]:
  """Splits a docs/reference.md §4 string into pieces; consecutive units are grouped."""
  pieces: list[tuple[str, object]] = []
  pos = 0
  for m in _PIECE_RE.finditer(s):
    if m.start() > pos:
      pieces.append(("text", s[pos:m.start()]))
    if m.group(1) is not None:
      if pieces and pieces[-1][0] == "units":
        pieces[-1][1].append(int(m.group(1)))
      else:
        pieces.append(("units", [int(m.group(1))]))
    else:
      pieces.append(("marker", m.group(0)[1:-1]))
    pos = m.end()
  if pos < len(s):
    pieces.append(("text", s[pos:]))
  return pieces
