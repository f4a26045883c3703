"""Spoken preference pairs (slamkit's preference-alignment format) -> prepared folder -> DPO batches.

Input: JSONL written by slamkit's `preference_alignment_feature_extractor`, one pair per line:
  {"prompt_path", "chosen_path", "rejected_path",
   "prompt": {"audio_repr": "<Un3><Un49>..."} | {"units": [...], "duration": [...]}, "chosen": {...}, "rejected": {...},
   optional "prompt_text", "chosen_text", "rejected_text"}
With `prompt_text` and `chosen_text` present, slamkit's repetition filter drops the pair unless the auto-BLEU-2
of prompt_text + " " + chosen_text is below 0.3 (its `max_auto_bleu`).

Prepared folder: ArrayRecord shards of one tf.train.Example per pair (fields of `PAIR_FIELDS`) and manifest.json
(kind "preference", counts, the rejected lines with file, line and reason).

Batches follow slamkit's `SLAMDPOTrainer.tokenize_row`: BOS + prompt units, continuation units + EOS. A pair
makes two consecutive rows (chosen, rejected) of the trainer's batch keys; `loss_mask` marks only the
continuation targets; a prompt longer than `max_prompt_len` keeps its last tokens (trl), a continuation is cut
to fit `seq_len`. `ref_logps` (reference log-probs stored with the data) rides along when given.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

from slm_jax.data import records
from slm_jax.data.packing import BATCH_KEYS
from slm_jax.data.slamkit import Rejected, _check_durations, _check_units, _int_list, _json, iter_inputs
from slm_jax.layout import Branches
from slm_jax.textmetrics import auto_bleu
from slm_jax.vocab import KIND_TEXT, VocabLayout, only_units, parse_units

KIND = "preference"
ITEMS = ("prompt", "chosen", "rejected")
TEXTS = tuple(f"{k}_text" for k in ITEMS)
PAIR_FIELDS = ("pair_id",) + TEXTS + tuple(f"{k}_units" for k in ITEMS)
MAX_AUTO_BLEU = 0.3  # slamkit config/data/preference_alignment_data.yaml


@dataclasses.dataclass
class Pair:
  pair_id: str
  prompt_units: np.ndarray
  chosen_units: np.ndarray
  rejected_units: np.ndarray
  prompt_text: str = ""
  chosen_text: str = ""
  rejected_text: str = ""


# ---------------------------------------------------------------------------------------------------- reading

def _item_units(obj, name: str, num_units: int) -> np.ndarray:
  item = obj.get(name)
  if not isinstance(item, dict):
    raise Rejected("malformed", f"field {name!r} must be an object with 'audio_repr' or 'units'")
  try:
    if "units" in item:
      units = _int_list(item, "units")
      _check_units(units, num_units)
      if "duration" in item:
        _check_durations(units, _int_list(item, "duration"))
      return units.astype(np.int16)
    s = item.get("audio_repr")
    if not isinstance(s, str):
      raise Rejected("malformed", "needs 'audio_repr' (string) or 'units' (list of integers)")
    if not only_units(s):
      raise Rejected("malformed", "'audio_repr' holds more than <UnN> tokens")
    units = parse_units(s)
    _check_units(units, num_units)
    return units.astype(np.int16)
  except Rejected as e:
    raise Rejected(e.category, f"field {name!r}: {e}") from None


def parse_pair(raw: bytes, num_units: int = 500, repetition_filter: bool = True,
               max_auto_bleu: float = MAX_AUTO_BLEU, line_no: int = 0) -> Pair:
  """One JSONL line -> Pair, or `slamkit.Rejected` (category and reason)."""
  obj = _json(raw, "line")
  if not isinstance(obj, dict):
    raise Rejected("malformed", "malformed JSON record: not an object")
  units = {k: _item_units(obj, k, num_units) for k in ITEMS}
  texts = {}
  for k in TEXTS:
    v = obj.get(k, "")
    if not isinstance(v, str):
      raise Rejected("malformed", f"field {k!r} must be a string")
    texts[k] = v
  if repetition_filter and texts["prompt_text"] and texts["chosen_text"]:
    score = auto_bleu(texts["prompt_text"] + " " + texts["chosen_text"], 2)
    if not score < max_auto_bleu:
      raise Rejected("repetition", f"auto-BLEU-2 of prompt_text + chosen_text is {score:.3f} (>= {max_auto_bleu})")
  pair_id = obj.get("prompt_path")
  pair_id = f"{pair_id}|{obj.get('chosen_path')}|{obj.get('rejected_path')}" if isinstance(pair_id, str) else str(line_no)
  return Pair(pair_id=pair_id, prompt_units=units["prompt"], chosen_units=units["chosen"],
              rejected_units=units["rejected"], **texts)


# ---------------------------------------------------------------------------------------------------- records

def encode(pair: Pair) -> bytes:
  ex = records._example_class()()
  feat = ex.features.feature
  for k in ("pair_id",) + TEXTS:
    feat[k].bytes_list.value.append(getattr(pair, k).encode("utf-8"))
  for k in ITEMS:
    feat[f"{k}_units"].bytes_list.value.append(np.ascontiguousarray(getattr(pair, f"{k}_units"), "<i2").tobytes())
  return ex.SerializeToString(deterministic=True)


def decode(record: bytes) -> Pair:
  feat = records._example_class().FromString(record).features.feature
  kw = {k: feat[k].bytes_list.value[0].decode("utf-8") for k in ("pair_id",) + TEXTS}
  kw.update({f"{k}_units": np.frombuffer(feat[f"{k}_units"].bytes_list.value[0], "<i2") for k in ITEMS})
  return Pair(**kw)


def _tfds_features():
  import tensorflow_datasets as tfds
  f = tfds.features
  spec = {k: f.Text() for k in ("pair_id",) + TEXTS}
  spec.update({f"{k}_units": f.Tensor(shape=(None,), dtype=np.int16, encoding=f.Encoding.BYTES) for k in ITEMS})
  return f.FeaturesDict(spec)


def prepare(inputs: list[str], out_dir: str, *, num_units: int = 500, strict: bool = False,
            validation_fraction: float = 0.01, validation_count: int | None = None,
            records_per_shard: int = 100_000, repetition_filter: bool = True, max_auto_bleu: float = MAX_AUTO_BLEU,
            overwrite: bool = False, log=print) -> dict:
  """Writes the prepared preference folder; returns its manifest (also out_dir/manifest.json)."""
  from slm_jax.data.prepare import PrepareConfig, _prepare_out_dir, expand_inputs, is_validation
  files = expand_inputs(inputs)
  _prepare_out_dir(PrepareConfig(kind=KIND, inputs=inputs, out_dir=out_dir, overwrite=overwrite))
  start = time.time()
  writers = {s: records.ShardedWriter(out_dir, s, records_per_shard) for s in records.SPLITS}
  counts = {s: {"pairs": 0, "prompt_units": 0, "chosen_units": 0, "rejected_units": 0} for s in records.SPLITS}
  rejected = []
  for path, line, raw in iter_inputs(files):
    try:
      if line == 0:
        raise Rejected("malformed", ".txt files hold no preference pairs (JSONL expected)")
      pair = parse_pair(raw, num_units, repetition_filter, max_auto_bleu, line)
    except Rejected as e:
      if strict:
        raise Rejected(e.category, f"{path}:{line}: {e} (--strict)") from None
      rejected.append({"file": path, "line": line, "reason": str(e), "category": e.category})
      continue
    if validation_count is not None:
      split = "validation" if counts["validation"]["pairs"] < validation_count else "train"
    else:
      split = "validation" if is_validation(pair.pair_id, validation_fraction) else "train"
    writers[split].write(encode(pair))
    c = counts[split]
    c["pairs"] += 1
    for k in ITEMS:
      c[f"{k}_units"] += len(getattr(pair, f"{k}_units"))
  splits = {s: w.finish() for s, w in writers.items()}
  for s in records.SPLITS:
    splits[s]["counts"] = counts[s]
  total = {k: sum(counts[s][k] for s in records.SPLITS) for k in counts["train"]}
  manifest = {"schema_version": records.SCHEMA_VERSION, "kind": KIND, "num_units": num_units, "counts": total,
              "splits": splits, "sources": files, "rejected": rejected,
              "options": {"validation_fraction": validation_fraction, "validation_count": validation_count,
                          "repetition_filter": repetition_filter, "max_auto_bleu": max_auto_bleu},
              "seconds": round(time.time() - start, 1)}
  import tensorflow_datasets as tfds
  tfds.folder_dataset.write_metadata(
      data_dir=out_dir, features=_tfds_features(),
      split_infos=[tfds.core.SplitInfo(name=s, shard_lengths=v["shard_lengths"], num_bytes=v["num_bytes"])
                   for s, v in splits.items()],
      version=records.VERSION, filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", check_data=False,
      description="slm_jax preference pairs, prepared by tools/prepare_data.py --kind=preference")
  with open(os.path.join(out_dir, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
  log(f"prepared {total['pairs']} preference pairs: "
      + ", ".join(f"{s} {v['num_examples']}" for s, v in splits.items())
      + (f"; rejected {len(rejected)} lines (e.g. {rejected[0]['file']}:{rejected[0]['line']}: "
         f"{rejected[0]['reason']})" if rejected else ""))
  return manifest


# ---------------------------------------------------------------------------------------------------- batches

def pair_sequences(pair: Pair, layout: VocabLayout, seq_len: int,
                   max_prompt_len: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
  """(prompt ids, [chosen ids, rejected ids]) after slamkit's BOS / EOS and trl's truncation."""
  if layout.eos_id is None:
    raise ValueError("DPO sequences end with EOS: the vocabulary layout has no eos_id")
  bos = [layout.bos_id] if layout.bos_id is not None else []
  prompt = np.concatenate([np.asarray(bos, np.int32), layout.unit_ids(pair.prompt_units)])
  limit = max_prompt_len if max_prompt_len else seq_len // 2
  prompt = prompt[-limit:]
  room = seq_len + 1 - len(prompt)  # a row holds seq_len inputs, so seq_len + 1 tokens
  conts = [np.concatenate([layout.unit_ids(u), [layout.eos_id]]).astype(np.int32)[:room]
           for u in (pair.chosen_units, pair.rejected_units)]
  return prompt, conts


def _empty_rows(rows: int, length: int) -> dict:
  return {k: np.zeros((rows, length), np.float32 if k == "loss_mask" else np.int8 if k == "kind" else np.int32)
          for k in BATCH_KEYS}


def _set_kinds(out: dict, r: int, layout: VocabLayout) -> None:
  """Row r's `kind`: the kind of each counted target, text where nothing counts."""
  kind = layout.kinds(out["targets"][r])
  kind[out["loss_mask"][r] == 0] = KIND_TEXT
  out["kind"][r] = kind


def pair_rows(pair: Pair | None, layout: VocabLayout, seq_len: int, max_prompt_len: int | None = None) -> dict:
  """Two rows [2, seq_len] of the batch keys (chosen, rejected); `None` gives an empty (all-padding) pair."""
  out = _empty_rows(2, seq_len)
  if pair is None:
    return out
  prompt, conts = pair_sequences(pair, layout, seq_len, max_prompt_len)
  for r, cont in enumerate(conts):
    s = np.concatenate([prompt, cont])
    n = len(s) - 1
    out["input_ids"][r, :n] = s[:-1]
    out["targets"][r, :n] = s[1:]
    out["loss_mask"][r, len(prompt) - 1:n] = 1.0  # targets that are continuation tokens
    out["segment_ids"][r, :n] = 1
    out["positions"][r, :n] = np.arange(n)
    _set_kinds(out, r, layout)
  return out


def shared_branches(seq_len: int, max_prompt_len: int | None = None):
  """`Branches` of shared-prompt rows for pairs that fit `pair_rows(seq_len, max_prompt_len)`: the prompt but its
  last token in a prefix of max_prompt_len - 1 positions, then chosen and rejected branches of seq_len + 1 -
  max_prompt_len positions, each the prompt's last token and the continuation (the first target of a branch is
  its first continuation token). 2 * seq_len + 1 - max_prompt_len positions in all, against 2 * seq_len."""
  m = max_prompt_len if max_prompt_len else seq_len // 2
  if not 1 <= m < seq_len:
    raise ValueError(f"max_prompt_len={m} must lie in [1, seq_len={seq_len})")
  return Branches(prefix=m - 1, length=seq_len + 1 - m, count=2)


def shared_pair_row(pair: Pair | None, layout: VocabLayout, seq_len: int, max_prompt_len: int | None = None) -> dict:
  """One row [1, total] of the batch keys holding the pair once, in the `shared_branches` layout: the same tokens,
  targets, positions and loss mask as the two rows of `pair_rows` (a branch's log-probs equal its row's), with
  the prompt computed once. A continuation keeps at most seq_len + 1 - max_prompt_len tokens (with EOS; trl's
  max_completion_length), where `pair_rows` lets one after a shorter prompt run to the row's end. `None` gives an
  empty (all-padding) pair."""
  br = shared_branches(seq_len, max_prompt_len)
  out = _empty_rows(1, br.total)
  if pair is None:
    return out
  prompt, conts = pair_sequences(pair, layout, seq_len, max_prompt_len)
  if not len(prompt):
    raise ValueError(f"pair {pair.pair_id!r}: empty prompt (no BOS and no units); a shared-prompt row needs one token")
  p = len(prompt) - 1  # the prefix keeps all but the last prompt token
  out["input_ids"][0, :p] = prompt[:-1]
  out["targets"][0, :p] = prompt[1:]
  out["segment_ids"][0, :p] = 1
  out["positions"][0, :p] = np.arange(p)
  for b, cont in enumerate(conts):
    s = br.prefix + b * br.length
    cont = cont[:br.length]
    n = len(cont)  # inputs: the last prompt token and the continuation but its last token (EOS)
    out["input_ids"][0, s:s + n] = np.concatenate([prompt[-1:], cont[:-1]])
    out["targets"][0, s:s + n] = cont
    out["loss_mask"][0, s:s + n] = 1.0
    out["segment_ids"][0, s:s + n] = 1
    out["positions"][0, s:s + n] = p + np.arange(n)
  _set_kinds(out, 0, layout)
  return out


class PreferenceIterator:
  """Host-local DPO batches: `global_batch_size` pairs per global batch -> [2 * pairs / process_count, seq_len].

  Pairs are read in a seeded order (a new permutation each epoch; in stored order with shuffle=False); batch
  i holds pairs i*B .. i*B+B-1 of that stream, this host's share the slice process_index of it. With a finite
  `num_epochs` the last batch is padded with empty pairs. The state is the batch index, so resumption is exact.
  `ref_logps` [num_records, 2] (chosen, rejected), or the path of an .npz holding one such array per split
  (read at the first batch), adds the batch key `ref_logps` [2 * pairs] (chosen, rejected alternating);
  `record_index` [rows] (-1 on padding) is always there. shared_prompt=True: one `shared_pair_row` per pair
  instead of the two rows of `pair_rows`.
  """

  def __init__(self, data_dir: str, split: str, layout: VocabLayout, *, seq_len: int, global_batch_size: int,
               seed: int = 0, process_index: int = 0, process_count: int = 1, num_epochs: int | None = None,
               shuffle: bool = True, max_prompt_len: int | None = None, ref_logps=None, shared_prompt: bool = False):
    import grain
    manifest = records.read_manifest(data_dir)
    if manifest["kind"] != KIND:
      raise ValueError(f"{data_dir} holds {manifest['kind']} documents, not preference pairs "
                       "(tools/prepare_data.py --kind=preference)")
    if manifest["num_units"] > layout.num_units:
      raise ValueError(f"{data_dir}: units up to {manifest['num_units']} but the vocabulary has {layout.num_units}")
    if global_batch_size % process_count:
      raise ValueError(f"global_batch_size {global_batch_size} does not divide by {process_count} processes")
    self.source = grain.sources.ArrayRecordDataSource(records.split_files(data_dir, split))
    self.n = len(self.source)
    self.layout, self.seq_len, self.max_prompt_len = layout, seq_len, max_prompt_len
    self.batch, self.local = global_batch_size, global_batch_size // process_count
    self.first = process_index * self.local
    self.seed, self.shuffle, self.num_epochs, self.ref = seed, shuffle, num_epochs, ref_logps
    self.shared = shared_prompt
    if shared_prompt:
      shared_branches(seq_len, max_prompt_len)  # checks the lengths now
    self.where = f"{data_dir} {split}"
    self.split = split
    self.index = 0

  def __iter__(self):
    return self

  def record(self, g: int) -> int:
    """Record index of the g-th pair of the stream."""
    epoch, i = divmod(g, self.n)
    if not self.shuffle:
      return i
    from slm_jax.data.pipeline import _seed32, permute
    return permute(i, self.n, _seed32("preference", self.seed, epoch))

  def __next__(self) -> dict:
    end = None if self.num_epochs is None else self.num_epochs * self.n
    start = self.index * self.batch
    if self.n == 0 or (end is not None and start >= end):
      raise StopIteration
    rows, idx = [], []
    make = shared_pair_row if self.shared else pair_rows
    for g in range(start + self.first, start + self.first + self.local):
      r = self.record(g) if end is None or g < end else None
      rows.append(make(None if r is None else decode(self.source[r]), self.layout, self.seq_len,
                       self.max_prompt_len))
      idx.append(-1 if r is None else r)
    self.index += 1
    out = {k: np.concatenate([r[k] for r in rows]) for k in BATCH_KEYS}
    out["record_index"] = np.repeat(np.asarray(idx, np.int32), 1 if self.shared else 2)
    if self.ref is not None:
      ref = self._ref()
      out["ref_logps"] = np.concatenate([ref[i] if i >= 0 else np.zeros(2, np.float32) for i in idx])
    return out

  def _ref(self) -> np.ndarray:
    if isinstance(self.ref, str):
      path = self.ref
      if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no precomputed reference log-probs (the DPO trainer writes them)")
      with np.load(path) as f:
        self.ref = f[self.split]
    if np.shape(self.ref) != (self.n, 2):
      raise ValueError(f"ref_logps has shape {np.shape(self.ref)}, expected ({self.n}, 2) for {self.where}")
    return np.asarray(self.ref, np.float32)

  def get_state(self) -> bytes:
    return json.dumps({"index": self.index, "seed": self.seed, "n": self.n}).encode()

  def set_state(self, state) -> None:
    d = json.loads(state.decode() if isinstance(state, bytes) else state)
    if (d["seed"], d["n"]) != (self.seed, self.n):
      raise ValueError(f"preference iterator state is for seed {d['seed']} over {d['n']} pairs; this one has "
                       f"seed {self.seed} over {self.n}")
    self.index = int(d["index"])

  def start_prefetch(self) -> None:
    pass
