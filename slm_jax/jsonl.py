"""JSON-lines input with errors that name the file and line (slamkit features, transcripts, vocoder units)."""
from __future__ import annotations

import json
import os
from typing import Iterator


def iter_records(path: str, error: type[Exception] = ValueError, what: str = "file") -> Iterator[tuple[int, dict]]:
  """(1-based line number, record) for every non-blank line of `path`; a missing file or a line that is not JSON
  raises `error` naming the file (as `what`) and the line."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what} {path} does not exist")
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise error(f"{path} line {n}: not JSON ({e})") from None
      yield n, rec
