"""The grain pipeline: packed batch layout, no token lost or duplicated over an epoch, mixing proportions, exact
resume (state and Orbax), host sharding, worker processes, global arrays."""
import collections
import dataclasses
import json

import grain
import jax
import numpy as np
import pytest
from transformers import AutoTokenizer

from slm_jax import vocab
from slm_jax.data import interleave, pipeline, prepare, records
from slm_jax.testing import synthetic_data as synthetic
from slm_jax.data.packing import BATCH_KEYS

SEQ = 64


@pytest.fixture(scope="module")
def tok_layout(llama3_tokenizer_dir):
  tok = AutoTokenizer.from_pretrained(llama3_tokenizer_dir)
  return tok, dataclasses.replace(vocab.extend_tokenizer(tok), bos_id=128000)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("pipe")
  paths = synthetic.write_corpus(str(tmp / "in"), num_utterances=36, num_text=24, seed=4, seconds=(1.0, 7.0),
                                 text_words=(5, 90))
  out = {}
  for kind, inp in (("text", paths["text"]), ("speech", paths["features"]), ("interleaved", paths["features"])):
    cfg = prepare.PrepareConfig(kind=kind, inputs=[inp], out_dir=str(tmp / kind), num_workers=1,
                                alignment_dir=paths["alignment_dir"], validation_fraction=0.25)
    prepare.prepare(cfg, progress=False, log=lambda *_: None)
    out[kind] = cfg.out_dir
  return out


def _reference_chunks(sources, split, tok, seed, epochs=(0,), mode="per_epoch"):
  """Independent path: records -> docs/reference.md §4 string -> HF tokenizer (+ BOS) -> chunks of SEQ."""
  chunks = collections.Counter()
  for kind, d in sources.items():
    src = grain.sources.ArrayRecordDataSource(records.split_files(d, split))
    for i in range(len(src)):
      doc = records.decode(src[i])
      for epoch in epochs:
        if kind == "interleaved":
          s = interleave.pieces_to_string(interleave.interleave(doc, seed, epoch, mode))
        else:
          s = doc.text if kind == "text" else vocab.units_to_string(doc.units)
        ids = [128000] + tok(s, add_special_tokens=False)["input_ids"]
        chunks.update(tuple(ids[j:j + SEQ]) for j in range(0, len(ids), SEQ))
  return chunks


def _check_layout(batch, rows, layout):
  """The fixed batch convention, checked position by position; returns the row segments (chunks)."""
  assert set(batch) == set(BATCH_KEYS)
  for k, dt in (("input_ids", np.int32), ("targets", np.int32), ("loss_mask", np.float32),
                ("segment_ids", np.int32), ("positions", np.int32), ("kind", np.int8)):
    assert batch[k].shape == (rows, SEQ) and batch[k].dtype == dt, k
  chunks = []
  for r in range(rows):
    ids, seg, pos = batch["input_ids"][r], batch["segment_ids"][r], batch["positions"][r]
    mask, tgt, kind = batch["loss_mask"][r], batch["targets"][r], batch["kind"][r]
    for s in range(1, seg.max() + 1):
      where = np.flatnonzero(seg == s)
      assert where.size and (np.diff(where) == 1).all()
      np.testing.assert_array_equal(pos[where], np.arange(where.size))
      np.testing.assert_array_equal(mask[where], [1.0] * (where.size - 1) + [0.0])
      np.testing.assert_array_equal(tgt[where[:-1]], ids[where[1:]])
      np.testing.assert_array_equal(kind[where[:-1]], layout.kinds(ids[where[1:]]))
      chunks.append(tuple(ids[where].tolist()))
    pad = seg == 0
    assert (mask[pad] == 0).all() and (pos[pad] == 0).all()
    if pad.any():
      assert np.flatnonzero(pad).min() > np.flatnonzero(~pad).max(initial=-1)  # padding only at the row end
  return chunks


def test_validation_pass_layout_and_tokens(sources, tok_layout):
  tok, layout = tok_layout
  it = pipeline.make_iterator(sources, None, tok, layout, split="validation", seq_len=SEQ, global_batch_size=4,
                              seed=3, process_index=0, process_count=1)
  chunks = collections.Counter()
  for batch in it:
    chunks.update(_check_layout(batch, 4, layout))
    c = pipeline.count_tokens(batch)
    assert sum(c.values()) == batch["loss_mask"].sum()
    assert c["marker"] == np.isin(batch["targets"], [layout.speech_id, layout.text_id])[batch["loss_mask"] > 0].sum()
  assert chunks == _reference_chunks(sources, "validation", tok, seed=3)


def test_one_train_epoch_loses_and_duplicates_nothing(sources, tok_layout):
  """num_epochs=2, per_epoch interleaving: the packed output minus padding is exactly every training document
  once per epoch, epoch e drawn with its own pattern."""
  tok, layout = tok_layout
  it = pipeline.make_iterator(sources, pipeline.SIMS_MIX_WEIGHTS, tok, layout, split="train", seq_len=SEQ,
                              global_batch_size=4, seed=5, num_epochs=2, process_index=0, process_count=1)
  chunks, batches = collections.Counter(), 0
  for batch in it:
    chunks.update(_check_layout(batch, 4, layout))
    batches += 1
  expected = _reference_chunks(sources, "train", tok, seed=5, epochs=(0, 1))
  assert chunks == expected
  assert expected != _reference_chunks(sources, "train", tok, seed=5, epochs=(0, 0))  # patterns differ by epoch
  fill = sum(len(c) for c in chunks.elements()) / (batches * 4 * SEQ)
  assert fill > 0.8


def test_static_mode_repeats_the_pattern(sources, tok_layout):
  tok, layout = tok_layout
  it = pipeline.make_iterator({"interleaved": sources["interleaved"]}, None, tok, layout, split="train",
                              seq_len=SEQ, global_batch_size=2, seed=5, num_epochs=2, interleave_mode="static",
                              process_index=0, process_count=1)
  chunks = collections.Counter(c for b in it for c in _check_layout(b, 2, layout))
  assert chunks == _reference_chunks({"interleaved": sources["interleaved"]}, "train", tok, 5, (0, 0), "static")


def test_mixing_proportions_over_10k_documents(sources, tok_layout):
  tok, layout = tok_layout
  weights = pipeline.SIMS_MIX_WEIGHTS
  docs = pipeline.document_dataset(sources, weights, tok, layout, split="train", seed=0, process_index=0,
                                   process_count=1)
  kinds = list(sources)
  assert pipeline.MIX_BLOCK == 10_000
  got = np.asarray([int(docs[i]["source"]) for i in range(20_000)])
  # exact proportions in every block of MIX_BLOCK documents: the weights x 10,000 are whole numbers here
  want = [{"text": 2024, "interleaved": 5433, "speech": 2543}[k] for k in kinds]
  assert pipeline.apportion([weights[k] for k in kinds], 10_000).tolist() == want
  for j in (0, 10_000):
    assert np.bincount(got[j:j + 10_000], minlength=3).tolist() == want
  assert got[:10_000].tolist() != got[10_000:].tolist()  # each block has its own order
  got = got[:10_000]
  windows = np.asarray([np.bincount(got[j:j + 100], minlength=3) for j in range(0, 10_000, 100)])
  assert windows.std(axis=0).min() > 1  # random order, not a fixed round robin
  assert [int(docs[i]["source"]) for i in range(300)] != [int(docs[i]["source"]) for i in range(300, 600)]
  # a different seed gives a different order with the same proportions
  other = pipeline.document_dataset(sources, weights, tok, layout, split="train", seed=1, process_index=0,
                                    process_count=1)
  assert [int(other[i]["source"]) for i in range(300)] != got[:300].tolist()
  assert np.bincount([other.slot(i)[0] for i in range(10_000)], minlength=3).tolist() == want


def test_apportion_largest_remainder_by_hand():
  assert pipeline.apportion([1, 1, 1], 10).tolist() == [4, 3, 3]  # 3.33 each: the first remainder wins the tie
  assert pipeline.apportion([0.5, 0.3, 0.2, 0.0], 7).tolist() == [4, 2, 1, 0]  # 3.5 2.1 1.4 0: +1 to 3.5
  assert pipeline.apportion([1000, 1], 10).tolist() == [9, 1]  # 9.99 0.01: a positive weight keeps one slot
  with pytest.raises(ValueError, match="non-negative with a positive sum"):
    pipeline.apportion([0.0, 0.0], 10)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y)
    for k in x:
      assert x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes(), k


def test_resume_is_exact(sources, tok_layout, tmp_path):
  tok, layout = tok_layout
  make = lambda: pipeline.make_iterator(  # noqa: E731
      sources, pipeline.SIMS_MIX_WEIGHTS, tok, layout, split="train", seq_len=SEQ, global_batch_size=2, seed=7,
      num_bins=4, process_index=0, process_count=1)
  reference = _take(make(), 14)
  for n in (0, 1, 2, 3, 6, 9):  # inside a packed set of 2 batches and at its edges
    it = make()
    _same(_take(it, n), reference[:n])
    state = json.loads(json.dumps(it.get_state()))
    resumed = make()
    resumed.set_state(state)
    _same(_take(resumed, 5), reference[n:n + 5])

  import orbax.checkpoint as ocp
  it = make()
  _take(it, 5)
  mngr = ocp.CheckpointManager(str(tmp_path / "ckpt"))
  mngr.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  restored = make()
  mngr.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  _same(_take(restored, 6), reference[5:11])
  mngr.close()


def test_two_hosts_read_disjoint_shares_covering_everything(sources, tok_layout):
  tok, layout = tok_layout
  kw = dict(seq_len=SEQ, global_batch_size=4, seed=2)
  for split, extra in (("validation", {}), ("train", {"num_epochs": 1})):
    whole = collections.Counter()
    for b in pipeline.make_iterator(sources, None, tok, layout, split=split, process_index=0, process_count=1,
                                    **kw, **extra):
      whole.update(_check_layout(b, 4, layout))
    parts = []
    for host in (0, 1):
      c = collections.Counter()
      for b in pipeline.make_iterator(sources, None, tok, layout, split=split, process_index=host, process_count=2,
                                      **kw, **extra):
        c.update(_check_layout(b, 2, layout))
      parts.append(c)
    assert parts[0] + parts[1] == whole and parts[0] and parts[1]
  for kind, d in sources.items():
    shares = []
    for h in (0, 1):
      ds = _docs_of(d, kind, tok, layout, (h, 2))
      shares.append({ds.record_index(i)[1] for i in range(len(ds))})
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] == set(range(records.read_manifest(d)["splits"]["train"]["num_examples"]))


def _docs_of(d, kind, tok, layout, host):
  from slm_jax.data import tokenise
  return pipeline.DocumentDataset(d, "train", kind, tokenise.DocumentTokenizer(tok, layout), seed=0, shuffle=True,
                                  num_epochs=1, mode="per_epoch", host=host)


def test_worker_processes_resume_exactly(sources, tok_layout):
  tok, layout = tok_layout
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  it = pipeline.make_iterator(sources, pipeline.SIMS_MIX_WEIGHTS, tok, layout, split="train", seq_len=SEQ,
                              global_batch_size=2, seed=9, num_bins=4, num_workers=2, process_index=0,
                              process_count=1)
  try:
    first = _take(it, 3)
    state = it.get_state()
    reference = _take(it, 4)
    it.set_state(state)
    _same(_take(it, 4), reference)
  finally:
    it.close()
  for b in first + reference:
    _check_layout(b, 2, layout)


def test_global_batch_shards_rows_over_data_and_fsdp(sources, tok_layout):
  from slm_jax.sharding import make_mesh
  from slm_jax.train.data import global_batch
  tok, layout = tok_layout
  mesh = make_mesh(data=2, fsdp=4)
  host = next(pipeline.make_iterator(sources, None, tok, layout, split="validation", seq_len=SEQ,
                                     global_batch_size=8, seed=0, process_index=0, process_count=1))
  out = global_batch(host, mesh)  # the trainer's
  for k, v in out.items():
    assert isinstance(v, jax.Array) and v.shape == (8, SEQ) and v.dtype == host[k].dtype
    assert v.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)
    np.testing.assert_array_equal(np.asarray(v), host[k])
    assert {s.data.shape for s in v.addressable_shards} == {(1, SEQ)}


def test_count_tokens_by_hand():
  batch = {"loss_mask": np.array([[1, 1, 1, 0], [1, 0, 0, 0]], np.float32),
           "kind": np.array([[0, 2, 1, 1], [1, 0, 2, 2]], np.int8)}
  assert pipeline.count_tokens(batch) == {"text": 1, "unit": 2, "marker": 1}


def test_fixed_number_of_validation_batches_per_host(sources, tok_layout):
  tok, layout = tok_layout
  kw = dict(split="validation", seq_len=SEQ, global_batch_size=4, seed=0, process_count=2)
  natural = [list(pipeline.make_iterator(sources, None, tok, layout, process_index=h, **kw)) for h in (0, 1)]
  n = max(len(b) for b in natural) + 2
  for h in (0, 1):
    it = pipeline.make_iterator(sources, None, tok, layout, process_index=h, num_batches=n, **kw)
    got = _take(it, 1)
    state = it.get_state()
    got += list(it)
    assert len(got) == n
    _same(got[:len(natural[h])], natural[h])
    assert all(b["loss_mask"].sum() == 0 and b["segment_ids"].sum() == 0 for b in got[len(natural[h]):])
    again = pipeline.make_iterator(sources, None, tok, layout, process_index=h, num_batches=n, **kw)
    again.set_state(state)
    _same(list(again), got[1:])
  short = list(pipeline.make_iterator(sources, None, tok, layout, process_index=0, num_batches=1, **kw))
  _same(short, natural[0][:1])
