"""The record schema of prepared datasets and its TFDS / ArrayRecord writer.

One record per document, a `tf.train.Example` laid out exactly as the TFDS features of `tfds_features()`, so a
prepared folder opens with `tfds.builder_from_directory(dir).as_data_source(split)` as well as with grain.
Fields (absent ones are empty):
  doc_id        str      slamkit `file_name` (or file:line for text corpora)
  text          str      text document; transcript words concatenated (interleaved); or a ready docs/reference.md §4 string
                         (interleaved documents read from tokens JSONL, which carry no words)
  word_offsets  int32    end offset (code points) of each word in `text`
  word_starts   float64  word start times, seconds (bit-exact, stored as raw bytes)
  word_ends     float64  word end times, seconds
  units         int16    deduplicated unit ids
  durations     int32    run length of each unit in frames (0.04 s); empty when unknown (tokens JSONL)
Reading and writing records needs only protobuf (the Example schema is built here); TFDS writes the metadata.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

SCHEMA_VERSION = 1
DATASET_NAME = "slm_jax_data"
VERSION = "1.0.0"
SPLITS = ("train", "validation")
KINDS = ("text", "speech", "interleaved")
FILE_FORMAT = "array_record"
_ARRAYS = {"word_offsets": np.int32, "word_starts": np.float64, "word_ends": np.float64, "units": np.int16,
           "durations": np.int32}
_STRINGS = ("doc_id", "text")


def _empty(dtype):
  return dataclasses.field(default_factory=lambda: np.zeros(0, dtype))


@dataclasses.dataclass
class Document:
  doc_id: str
  text: str = ""
  word_offsets: np.ndarray = _empty(np.int32)
  word_starts: np.ndarray = _empty(np.float64)
  word_ends: np.ndarray = _empty(np.float64)
  units: np.ndarray = _empty(np.int16)
  durations: np.ndarray = _empty(np.int32)

  @property
  def num_words(self) -> int:
    return len(self.word_offsets)

  def words(self) -> list[str]:
    starts = [0] + self.word_offsets[:-1].tolist()
    return [self.text[a:b] for a, b in zip(starts, self.word_offsets.tolist())]


def tfds_features():
  """The TFDS FeaturesDict of a record (imports tensorflow_datasets)."""
  import tensorflow_datasets as tfds
  f = tfds.features
  spec = {k: f.Text() for k in _STRINGS}
  spec.update({k: f.Tensor(shape=(None,), dtype=dt, encoding=f.Encoding.BYTES) for k, dt in _ARRAYS.items()})
  return f.FeaturesDict(spec)


_EXAMPLE = None


def _example_class():
  """tf.train.Example's message class, built from its schema here (same field numbers; no tensorflow(_datasets))."""
  global _EXAMPLE
  if _EXAMPLE is None:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="slm_jax/tf_example.proto", package="slm_jax.tf", syntax="proto3")

    def message(name, *fields):
      m = f.message_type.add(name=name)
      for fname, number, ftype, label, type_name, oneof in fields:
        fd = m.field.add(name=fname, number=number, type=ftype, label=label, type_name=type_name or None)
        if oneof is not None:
          fd.oneof_index = oneof
      return m

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", ("value", 1, F.TYPE_BYTES, rep, None, None))
    message("FloatList", ("value", 1, F.TYPE_FLOAT, rep, None, None))
    message("Int64List", ("value", 1, F.TYPE_INT64, rep, None, None))
    feature = message("Feature", ("bytes_list", 1, F.TYPE_MESSAGE, opt, ".slm_jax.tf.BytesList", 0),
                      ("float_list", 2, F.TYPE_MESSAGE, opt, ".slm_jax.tf.FloatList", 0),
                      ("int64_list", 3, F.TYPE_MESSAGE, opt, ".slm_jax.tf.Int64List", 0))
    feature.oneof_decl.add(name="kind")
    features = message("Features", ("feature", 1, F.TYPE_MESSAGE, rep, ".slm_jax.tf.Features.FeatureEntry", None))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt, type_name=".slm_jax.tf.Feature")
    entry.options.map_entry = True
    message("Example", ("features", 1, F.TYPE_MESSAGE, opt, ".slm_jax.tf.Features", None))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    _EXAMPLE = message_factory.GetMessageClass(pool.FindMessageTypeByName("slm_jax.tf.Example"))
  return _EXAMPLE


def encode(doc: Document) -> bytes:
  """Document -> serialized tf.train.Example (the wire format of `tfds_features().serialize_example`)."""
  ex = _example_class()()
  feat = ex.features.feature
  for k in _STRINGS:
    feat[k].bytes_list.value.append(getattr(doc, k).encode("utf-8"))
  for k, dt in _ARRAYS.items():
    feat[k].bytes_list.value.append(np.ascontiguousarray(getattr(doc, k), dtype=np.dtype(dt).newbyteorder("<"))
                                    .tobytes())
  return ex.SerializeToString(deterministic=True)


def decode(record: bytes) -> Document:
  """Serialized record -> Document (numpy views of the raw bytes; no tensorflow)."""
  feat = _example_class().FromString(record).features.feature
  kw = {k: feat[k].bytes_list.value[0].decode("utf-8") for k in _STRINGS}
  for k, dt in _ARRAYS.items():
    kw[k] = np.frombuffer(feat[k].bytes_list.value[0], dtype=np.dtype(dt).newbyteorder("<"))
  return Document(**kw)


def shard_name(split: str, shard: int, num_shards: int) -> str:
  return f"{DATASET_NAME}-{split}.{FILE_FORMAT}-{shard:05d}-of-{num_shards:05d}"


def split_files(data_dir: str, split: str) -> list[str]:
  """The ArrayRecord shards of one split of a prepared folder, in order."""
  info = read_manifest(data_dir)
  n = info["splits"][split]["num_shards"]
  return [os.path.join(data_dir, shard_name(split, i, n)) for i in range(n)]


class ShardedWriter:
  """Writes one split as ArrayRecord shards of at most `records_per_shard` records (named once the count is known)."""

  def __init__(self, out_dir: str, split: str, records_per_shard: int = 100_000):
    self.out_dir, self.split, self.records_per_shard = out_dir, split, records_per_shard
    self.shard_lengths: list[int] = []
    self.num_bytes = 0
    self._writer = None
    self._tmp: list[str] = []

  def _open(self):
    from array_record.python.array_record_module import ArrayRecordWriter
    path = os.path.join(self.out_dir, f".tmp-{self.split}-{len(self._tmp):05d}")
    self._tmp.append(path)
    self._writer = ArrayRecordWriter(path, "group_size:1")
    self.shard_lengths.append(0)

  def write(self, record: bytes) -> None:
    if self._writer is None or self.shard_lengths[-1] >= self.records_per_shard:
      self.close_shard()
      self._open()
    self._writer.write(record)
    self.shard_lengths[-1] += 1
    self.num_bytes += len(record)

  def close_shard(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def finish(self) -> dict:
    """Closes and renames the shards; an empty split gets one empty shard. Returns the split's info."""
    if not self._tmp:
      self._open()
    self.close_shard()
    n = len(self._tmp)
    for i, tmp in enumerate(self._tmp):
      os.replace(tmp, os.path.join(self.out_dir, shard_name(self.split, i, n)))
    return {"num_shards": n, "shard_lengths": list(self.shard_lengths), "num_examples": sum(self.shard_lengths),
            "num_bytes": self.num_bytes}


def write_metadata(out_dir: str, manifest: dict) -> None:
  """manifest.json plus the TFDS dataset_info.json / features.json (version, split statistics, our counts)."""
  import tensorflow_datasets as tfds
  splits = [tfds.core.SplitInfo(name=s, shard_lengths=v["shard_lengths"], num_bytes=v["num_bytes"])
            for s, v in manifest["splits"].items()]
  tfds.folder_dataset.write_metadata(
      data_dir=out_dir, features=tfds_features(), split_infos=splits, version=VERSION,
      filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", check_data=False,
      description=f"slm_jax {manifest['kind']} documents (schema {SCHEMA_VERSION}), prepared by tools/prepare_data.py",
      metadata=tfds.core.MetadataDict(kind=manifest["kind"], schema_version=SCHEMA_VERSION,
                                      counts=manifest["counts"]))
  with open(os.path.join(out_dir, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)


def read_manifest(data_dir: str) -> dict:
  path = os.path.join(data_dir, "manifest.json")
  try:
    with open(path) as f:
      manifest = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: not a prepared dataset folder (run tools/prepare_data.py)") from None
  if manifest.get("schema_version") != SCHEMA_VERSION:
    raise ValueError(f"{path}: schema_version {manifest.get('schema_version')} != {SCHEMA_VERSION} "
                     "(prepare the data again with this version)")
  return manifest
