"""Streaming safetensors: read one tensor at a time (any dtype, bf16 included), write sharded folders.

Reads use plain `pread` into a fresh numpy buffer (no mmap, no torch), so host memory holds one tensor at a
time and the file's pages are not counted against the process. bf16 is viewed as `ml_dtypes.bfloat16`.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Callable, Iterable

import ml_dtypes
import numpy as np

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
MAX_SHARD_BYTES = 5 * 1000**3  # transformers' default "5GB"

DTYPES = {"F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
          "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
          "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
          "BOOL": np.dtype(np.bool_)}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class SafetensorsError(ValueError):
  pass


def _read_header(path: str) -> tuple[dict, int]:
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise SafetensorsError(f"{path}: too short to be a safetensors file")
    n = struct.unpack("<Q", raw)[0]
    try:
      header = json.loads(f.read(n))
    except ValueError as e:
      raise SafetensorsError(f"{path}: unreadable safetensors header ({e})") from e
  return header, 8 + n


class SafetensorsReader:
  """All tensors of a HF folder (one `model.safetensors` or a sharded index), read on demand."""

  def __init__(self, folder: str):
    self.folder = folder
    index = os.path.join(folder, INDEX_FILE)
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      files = sorted(set(weight_map.values()))
    elif os.path.exists(os.path.join(folder, SINGLE_FILE)):
      files = [SINGLE_FILE]
    else:
      found = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
      if not found:
        raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {folder} (only safetensors are read; "
                                "convert .bin checkpoints with transformers' save_pretrained first)")
      files = found
    self.entries: dict[str, tuple[str, int, dict]] = {}  # name -> (file, data start, header entry)
    for fname in files:
      path = os.path.join(folder, fname)
      if not os.path.exists(path):
        raise FileNotFoundError(f"{index} names {fname}, which is missing from {folder}")
      header, start = _read_header(path)
      for name, entry in header.items():
        if name != "__metadata__":
          self.entries[name] = (path, start, entry)

  def names(self) -> list[str]:
    return list(self.entries)

  def __contains__(self, name: str) -> bool:
    return name in self.entries

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entry(name)[2]["shape"])

  def dtype(self, name: str) -> np.dtype:
    return self._dtype(name, self._entry(name)[2])

  def nbytes(self) -> int:
    return sum(e["data_offsets"][1] - e["data_offsets"][0] for _, _, e in self.entries.values())

  def _entry(self, name: str):
    if name not in self.entries:
      raise KeyError(f"tensor {name} is not in the safetensors files of {self.folder}")
    return self.entries[name]

  def _dtype(self, name, entry) -> np.dtype:
    if entry["dtype"] not in DTYPES:
      raise SafetensorsError(f"tensor {name}: unsupported safetensors dtype {entry['dtype']}")
    return DTYPES[entry["dtype"]]

  def get(self, name: str) -> np.ndarray:
    """The tensor as a fresh, writable numpy array (its own memory)."""
    path, start, entry = self._entry(name)
    dtype = self._dtype(name, entry)
    begin, end = entry["data_offsets"]
    shape = tuple(entry["shape"])
    if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
      raise SafetensorsError(f"{path}: tensor {name} has {end - begin} bytes for shape {shape} {entry['dtype']}")
    out = np.empty(shape, dtype)
    buf = out.reshape(-1).view(np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
      done, chunk = 0, 1 << 28
      while done < buf.size:
        n = os.preadv(fd, [buf[done:done + chunk]], start + begin + done)
        if n <= 0:
          raise SafetensorsError(f"{path}: file ends inside tensor {name}")
        done += n
    finally:
      os.close(fd)
    return out


def plan_shards(specs: list[tuple[str, tuple, np.dtype]], max_bytes: int = MAX_SHARD_BYTES) -> list[list[int]]:
  """Groups tensors (in order) into shards of at most `max_bytes` (a larger single tensor gets its own)."""
  shards, cur, size = [], [], 0
  for i, (_, shape, dtype) in enumerate(specs):
    n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if cur and size + n > max_bytes:
      shards.append(cur)
      cur, size = [], 0
    cur.append(i)
    size += n
  if cur:
    shards.append(cur)
  return shards


def _write_file(path: str, specs: list[tuple[str, tuple, np.dtype]], arrays: Iterable[np.ndarray]) -> None:
  header, offset = {"__metadata__": {"format": "pt"}}, 0
  for name, shape, dtype in specs:
    n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    header[name] = {"dtype": DTYPE_NAMES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + n]}
    offset += n
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-len(raw) % 8)  # data section 8-byte aligned, as the reference writer does
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for (name, shape, dtype), arr in zip(specs, arrays):
      if tuple(arr.shape) != tuple(shape) or arr.dtype != np.dtype(dtype):
        raise SafetensorsError(f"tensor {name}: got {arr.shape} {arr.dtype}, planned {shape} {np.dtype(dtype)}")
      arr = np.ascontiguousarray(arr)
      f.write(arr.reshape(-1).view(np.uint8).data)


def write_sharded(folder: str, specs: list[tuple[str, tuple, np.dtype]], get: Callable[[str], np.ndarray],
                  max_bytes: int = MAX_SHARD_BYTES, progress: Callable[[str], None] | None = None) -> list[str]:
  """Writes tensors `get(name)` (fetched one at a time, in `specs` order) as HF safetensors shards + index.

  One shard is written as `model.safetensors` without an index, as transformers does. Returns the file names.
  """
  shards = plan_shards(specs, max_bytes)
  n = len(shards)
  names = [SINGLE_FILE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]

  def stream(idx):
    for i in idx:
      arr = get(specs[i][0])
      if progress:
        progress(specs[i][0])
      yield arr

  weight_map = {}
  for fname, idx in zip(names, shards):
    _write_file(os.path.join(folder, fname), [specs[i] for i in idx], stream(idx))
    weight_map.update({specs[i][0]: fname for i in idx})
  if n > 1:
    total = sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for _, s, d in specs)
    with open(os.path.join(folder, INDEX_FILE), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  return names
