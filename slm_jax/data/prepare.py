"""slamkit-format inputs -> a prepared dataset folder (TFDS ArrayRecord shards + manifest.json); tools/prepare_data.py.

Streams the inputs in blocks of lines through a process pool (bounded number of blocks in flight, output in
input order), writes accepted documents to the train / validation shards, and records every rejected one with
its file, line and reason.
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import hashlib
import multiprocessing
import os
import sys
import time

from slm_jax import console
from slm_jax.frames import FRAME_S
from slm_jax.data import records, slamkit

_BLOCK = 256


@dataclasses.dataclass
class PrepareConfig:
  kind: str
  inputs: list[str]
  out_dir: str
  alignment_dir: str | None = None
  strict: bool = False
  validation_fraction: float = 0.01
  validation_count: int | None = None  # first N accepted documents (input order) instead of the fraction
  records_per_shard: int = 100_000
  num_workers: int | None = None  # None: all cores
  text_field: str = "text"
  num_units: int = 500
  tokenizer_dir: str | None = None  # counts text tokens with this HF tokenizer when given
  overwrite: bool = False
  time_tolerance: float = FRAME_S  # seconds a word may end past the audio
  allow_empty: bool = False  # accept empty input files and a dataset without documents


class InputError(ValueError):
  """Bad input to the preparation as a whole (a folder given as a file, an empty input)."""


def expand_inputs(patterns: list[str]) -> list[str]:
  files = []
  for pattern in patterns:
    found = sorted(glob.glob(pattern, recursive=True))
    if not found:
      raise FileNotFoundError(f"--input {pattern!r} matches no file")
    folders = [f for f in found if os.path.isdir(f)]
    if folders:
      raise InputError(f"--input {pattern!r}: {folders[0]} is a folder; give files or a glob such as "
                       f"'{os.path.join(folders[0], '*.jsonl')}'")
    files.extend(found)
  return files


def check_not_empty(files: list[str]) -> None:
  """Refuses empty input files (a truncated or never-written export), naming the first."""
  empty = [f for f in files if os.path.getsize(f) == 0]
  if empty:
    raise InputError(f"{empty[0]}: empty input file ({len(empty)} of {len(files)} inputs are empty); "
                     "pass --allow_empty to accept empty inputs")


def is_validation(doc_id: str, fraction: float) -> bool:
  """Deterministic split by a hash of the document id (the same on every run and machine)."""
  h = int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8, person=b"slmsplit").digest(), "little")
  return h < fraction * 2.0**64


_STATE: dict = {}


def _init_worker(opts: slamkit.ReadOptions, tokenizer_dir: str | None) -> None:
  _STATE["opts"] = opts
  _STATE["tok"] = None
  if tokenizer_dir:
    from transformers import AutoTokenizer
    _STATE["tok"] = AutoTokenizer.from_pretrained(tokenizer_dir)


def _text_tokens(doc: records.Document) -> int | None:
  tok = _STATE["tok"]
  if tok is None or not doc.text:
    return 0 if tok is not None else None
  from slm_jax import vocab
  texts = [v for k, v in vocab.parse_string(doc.text) if k == "text"]
  return sum(len(tok.encode(t, add_special_tokens=False)) for t in texts)


def _work(block: list[tuple[str, int, bytes]]) -> list[tuple]:
  opts = _STATE["opts"]
  out = []
  for path, line, raw in block:
    try:
      doc = slamkit.read_one(path, line, raw, opts)
    except slamkit.Rejected as e:
      out.append(("rejected", path, line, e.category, str(e)))
      continue
    except OSError as e:
      out.append(("rejected", path, line, "malformed", f"cannot read: {e}"))
      continue
    stats = (slamkit.word_count(doc), len(doc.units), _text_tokens(doc))
    out.append(("ok", path, line, doc.doc_id, records.encode(doc), stats))
  return out


def _blocks(files: list[str]):
  block = []
  for item in slamkit.iter_inputs(files):
    block.append(item)
    if len(block) >= _BLOCK:
      yield block
      block = []
  if block:
    yield block


def _results(files: list[str], cfg: PrepareConfig, opts: slamkit.ReadOptions):
  workers = cfg.num_workers or os.cpu_count() or 1
  if workers <= 1:
    _init_worker(opts, cfg.tokenizer_dir)
    for block in _blocks(files):
      yield from _work(block)
    return
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(workers, initializer=_init_worker, initargs=(opts, cfg.tokenizer_dir)) as pool:
    pending = collections.deque()
    for block in _blocks(files):
      pending.append(pool.apply_async(_work, (block,)))
      while len(pending) >= 4 * workers:
        yield from pending.popleft().get()
    while pending:
      yield from pending.popleft().get()


def _empty_counts() -> dict:
  return {"documents": 0, "words": 0, "unit_tokens": 0, "text_tokens": 0}


def _ours(out_dir: str) -> list[str]:
  """Files a preparation writes into `out_dir` (shards, their temporary names, metadata)."""
  return [f for f in os.listdir(out_dir) if f.startswith((records.DATASET_NAME, ".tmp-")) or
          f in ("manifest.json", "dataset_info.json", "features.json", "metadata.json")]


def _remove_ours(out_dir: str, remove_dir: bool) -> None:
  """No partial output: removes what a failed preparation wrote (and `out_dir` when it made it and it is empty)."""
  if not os.path.isdir(out_dir):
    return
  for f in _ours(out_dir):
    os.remove(os.path.join(out_dir, f))
  if remove_dir and not os.listdir(out_dir):
    os.rmdir(out_dir)


def _prepare_out_dir(cfg: PrepareConfig) -> None:
  os.makedirs(cfg.out_dir, exist_ok=True)
  existing = _ours(cfg.out_dir)
  if existing and not os.path.exists(os.path.join(cfg.out_dir, "manifest.json")):
    # no manifest: the leftovers of a killed run (temporary shards), not a dataset; removed
    print(f"prepare_data: removing {len(existing)} files left in {cfg.out_dir} by an unfinished run "
          f"(e.g. {sorted(existing)[0]})", file=sys.stderr)
    for f in existing:
      os.remove(os.path.join(cfg.out_dir, f))
    existing = []
  if existing and not cfg.overwrite:
    raise FileExistsError(f"{cfg.out_dir} already holds a prepared dataset ({existing[0]}); pass --overwrite")
  for f in existing:
    os.remove(os.path.join(cfg.out_dir, f))


def _count_documents(files: list[str]) -> int:
  """Documents `slamkit.iter_inputs` will yield (non-blank lines; a .txt file is one): the progress bar's total."""
  n = 0
  for path in files:
    if path.endswith(".txt"):
      n += 1
      continue
    with open(path, "rb") as f:
      n += sum(1 for line in f if line.strip())
  return n


def prepare(cfg: PrepareConfig, progress: bool = True, log=print) -> dict:
  """Runs the preparation; returns the manifest (also written to out_dir/manifest.json)."""
  if cfg.kind not in records.KINDS:
    raise ValueError(f"--kind must be one of {records.KINDS}, got {cfg.kind!r}")
  files = expand_inputs(cfg.inputs)
  if not cfg.allow_empty:
    check_not_empty(files)
  made = not os.path.isdir(cfg.out_dir)
  _prepare_out_dir(cfg)
  try:
    return _prepare(cfg, files, progress, log)
  except BaseException:
    _remove_ours(cfg.out_dir, remove_dir=made)
    raise


def _prepare(cfg: PrepareConfig, files: list[str], progress: bool, log) -> dict:
  opts = slamkit.ReadOptions(kind=cfg.kind, alignment_dir=cfg.alignment_dir, text_field=cfg.text_field,
                             num_units=cfg.num_units, time_tolerance=cfg.time_tolerance)
  writers = {s: records.ShardedWriter(cfg.out_dir, s, cfg.records_per_shard) for s in records.SPLITS}
  counts = {s: _empty_counts() for s in records.SPLITS}
  rejected = []
  bar = console.bar(total=_count_documents(files), desc="preparing", unit="doc") if progress else None
  start = time.time()
  for res in _results(files, cfg, opts):
    if res[0] == "rejected":
      _, path, line, category, reason = res
      if cfg.strict:
        raise slamkit.Rejected(category, f"{path}:{line}: {reason} (--strict)")
      rejected.append({"file": path, "line": line, "reason": reason, "category": category})
    else:
      _, path, line, doc_id, record, (words, units, text_tokens) = res
      if cfg.validation_count is not None:
        split = "validation" if counts["validation"]["documents"] < cfg.validation_count else "train"
      else:
        split = "validation" if is_validation(doc_id, cfg.validation_fraction) else "train"
      writers[split].write(record)
      c = counts[split]
      c["documents"] += 1
      c["words"] += words
      c["unit_tokens"] += units
      c["text_tokens"] = None if text_tokens is None or c["text_tokens"] is None else c["text_tokens"] + text_tokens
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  if not cfg.allow_empty and not any(c["documents"] for c in counts.values()):
    first = f"; e.g. {rejected[0]['file']}:{rejected[0]['line']}: {rejected[0]['reason']}" if rejected else ""
    raise InputError(f"no document accepted from {len(files)} input file(s) ({len(rejected)} rejected{first}); "
                     "pass --allow_empty to write an empty dataset")
  splits = {s: w.finish() for s, w in writers.items()}
  total = _empty_counts()
  for s in records.SPLITS:
    splits[s]["counts"] = counts[s]
    for k in total:
      total[k] = None if counts[s][k] is None or total[k] is None else total[k] + counts[s][k]
  manifest = {
      "schema_version": records.SCHEMA_VERSION, "kind": cfg.kind, "num_units": cfg.num_units,
      "counts": total, "splits": splits, "sources": files, "rejected": rejected,
      "options": {"alignment_dir": cfg.alignment_dir, "validation_fraction": cfg.validation_fraction,
                  "validation_count": cfg.validation_count, "text_field": cfg.text_field,
                  "tokenizer_dir": cfg.tokenizer_dir, "time_tolerance": cfg.time_tolerance},
      "seconds": round(time.time() - start, 1),
  }
  records.write_metadata(cfg.out_dir, manifest)
  log(summary(manifest))
  return manifest


def summary(manifest: dict) -> str:
  c = manifest["counts"]
  lines = [f"prepared {c['documents']} {manifest['kind']} documents ({c['words']} words, {c['unit_tokens']} unit "
           f"tokens, {c['text_tokens'] if c['text_tokens'] is not None else 'uncounted'} text tokens): "
           + ", ".join(f"{s} {v['num_examples']}" for s, v in manifest["splits"].items())]
  rej = manifest["rejected"]
  if rej:
    by_category = collections.Counter(r["category"] for r in rej)
    lines.append(f"rejected {len(rej)} documents:")
    lines += [f"  {n:8d}  {category}" for category, n in by_category.most_common()]
    lines += [f"  e.g. {r['file']}:{r['line']}: {r['reason']}" for r in rej[:5]]
  return "\n".join(lines)
