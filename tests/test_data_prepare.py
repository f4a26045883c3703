"""prepare_data: slamkit formats in, TFDS ArrayRecord records out (round trip, TFDS view, slamkit compatibility),
and every kind of bad input rejected with its reason."""
import dataclasses
import json
import os

import numpy as np
import pytest
from transformers import AutoTokenizer

from slm_jax import vocab
from slm_jax.data import prepare, records, slamkit, tokenise
from slm_jax.testing import synthetic_data as synthetic


def _prep(tmp, kind, inputs, name=None, **kw):
  kw.setdefault("num_workers", 1)
  cfg = prepare.PrepareConfig(kind=kind, inputs=[str(p) for p in inputs], out_dir=str(tmp / (name or kind)), **kw)
  return prepare.prepare(cfg, progress=False, log=lambda *_: None), cfg.out_dir


def _all_docs(out_dir):
  import grain
  docs = {}
  for split in records.SPLITS:
    src = grain.sources.ArrayRecordDataSource(records.split_files(out_dir, split))
    docs[split] = [records.decode(src[i]) for i in range(len(src))]
  return docs


def _jsonl(path, rows):
  with open(path, "wb") as f:
    for r in rows:
      f.write(r if isinstance(r, bytes) else json.dumps(r).encode())
      f.write(b"\n")
  return path


def test_slamkit_example_speech_equals_tokens_jsonl(tmp_path, slamkit_example, llama3_tokenizer_dir):
  """features.jsonl -> exactly the audio_repr strings of tokens.jsonl, and their ids equal the HF tokenizer's."""
  with open(os.path.join(slamkit_example, "tokens.jsonl")) as f:
    expected = {r["file_name"]: r["audio_repr"] for r in map(json.loads, f)}
  manifest, out = _prep(tmp_path, "speech", [os.path.join(slamkit_example, "features.jsonl")], validation_count=0)
  assert manifest["counts"]["documents"] == 2 and manifest["counts"]["unit_tokens"] == 288 + 328
  assert manifest["rejected"] == []
  docs = _all_docs(out)["train"]
  strings = list(tokenise.document_strings(out, num=9))
  assert dict(zip([d.doc_id for d in docs], strings)) == expected
  assert sum(d.durations.sum() for d in docs) == 352 + 398
  tok = AutoTokenizer.from_pretrained(llama3_tokenizer_dir)
  layout = dataclasses.replace(vocab.extend_tokenizer(tok), bos_id=128000)
  enc = tokenise.DocumentTokenizer(tok, layout)
  for d in docs:
    ids = enc.encode_document(d, "speech")
    assert ids.tolist() == [128000] + tok(expected[d.doc_id], add_special_tokens=False)["input_ids"]
  # the tokens JSONL itself reads back as the same speech documents (durations unknown there)
  _, out2 = _prep(tmp_path, "speech", [os.path.join(slamkit_example, "tokens.jsonl")], name="tok",
                  validation_count=0)
  for a, b in zip(docs, _all_docs(out2)["train"]):
    assert a.doc_id == b.doc_id and a.units.tolist() == b.units.tolist() and b.durations.size == 0


def test_interleaved_round_trip_and_tfds_view(tmp_path):
  paths = synthetic.write_corpus(str(tmp_path / "in"), num_utterances=40, num_text=0, seed=1)
  manifest, out = _prep(tmp_path, "interleaved", [paths["features"]], alignment_dir=paths["alignment_dir"],
                        validation_fraction=0.2)
  with open(paths["features"]) as f:
    feats = {r["file_name"]: r for r in map(json.loads, f)}
  docs = _all_docs(out)
  assert len(docs["train"]) + len(docs["validation"]) == 40 and 0 < len(docs["validation"]) < 20
  n_words = 0
  for d in docs["train"] + docs["validation"]:
    with open(os.path.join(paths["alignment_dir"], os.path.basename(d.doc_id)[:-5] + ".json")) as f:
      aligned = json.load(f)["aligned_text"]
    assert d.words() == [w for w, _, _ in aligned]
    assert d.word_starts.tolist() == [s for _, s, _ in aligned]  # bit-exact float64
    assert d.word_ends.tolist() == [e for _, _, e in aligned]
    assert d.units.tolist() == feats[d.doc_id]["units"] and d.durations.tolist() == feats[d.doc_id]["duration"]
    n_words += len(aligned)
  assert manifest["counts"]["words"] == n_words
  assert manifest["counts"]["unit_tokens"] == sum(len(r["units"]) for r in feats.values())
  assert manifest["splits"]["validation"]["counts"]["documents"] == len(docs["validation"])

  import tensorflow_datasets as tfds
  builder = tfds.builder_from_directory(out)
  assert str(builder.info.version) == records.VERSION
  assert builder.info.metadata["kind"] == "interleaved"
  for split in records.SPLITS:
    assert builder.info.splits[split].num_examples == len(docs[split])
    view = builder.as_data_source(split)
    for i, d in enumerate(docs[split]):
      ex = view[i]
      assert ex["doc_id"].decode() == d.doc_id and ex["text"].decode() == d.text
      for key in ("word_offsets", "word_starts", "word_ends", "units", "durations"):
        np.testing.assert_array_equal(ex[key], getattr(d, key))
        assert ex[key].dtype == getattr(d, key).dtype


def test_alignment_lookup_next_to_audio(tmp_path):
  rng = np.random.default_rng(0)
  audio = tmp_path / "audio"
  audio.mkdir()
  rows = []
  for i, name in enumerate([str(audio / "a.flac"), "audio/b.wav"]):  # absolute; relative to the features file
    feats, align = synthetic.aligned_utterance(rng, name, 4.0)
    rows.append(feats)
    with open(audio / f"{'ab'[i]}.json", "w") as f:
      json.dump(align, f)
  manifest, _ = _prep(tmp_path, "interleaved", [_jsonl(tmp_path / "f.jsonl", rows)], validation_count=0)
  assert manifest["counts"]["documents"] == 2 and manifest["rejected"] == []


def test_each_bad_input_is_rejected_with_its_reason(tmp_path):
  rng = np.random.default_rng(0)
  align_dir = tmp_path / "align"
  align_dir.mkdir()

  def utt(name, **change):
    feats, align = synthetic.aligned_utterance(rng, f"{name}.flac", 3.0)
    feats.update({k: v for k, v in change.items() if k in feats})
    if "aligned_text" in change:
      align["aligned_text"] = change["aligned_text"](align["aligned_text"])
    if not change.get("no_alignment"):
      (align_dir / f"{name}.json").write_bytes(change.get("raw_alignment") or json.dumps(align).encode())
    return feats

  def swap(words):
    words[1][1], words[1][2] = words[1][2] + 1.0, words[1][1]  # word 1 ends before it starts
    return words

  lines = [
      utt("good"),
      utt("unit_high", units=[1, 500, 2], duration=[25, 25, 25]),
      utt("unit_neg", units=[1, -1], duration=[40, 35]),
      utt("dur_zero", units=[1, 2], duration=[75, 0]),
      utt("dur_count", units=[1, 2, 3], duration=[50, 25]),
      utt("backwards", aligned_text=swap),
      utt("reorder", aligned_text=lambda w: [w[1], w[0]] + w[2:]),
      utt("past_end", aligned_text=lambda w: w[:-1] + [[" late", w[-2][2], 9.0]]),
      utt("no_align", no_alignment=True),
      utt("empty_units", units=[], duration=[]),
      utt("empty_words", aligned_text=lambda w: []),
      utt("bad_align_json", raw_alignment=b"{not json"),
      b'{"units": [1, 2], "duration": [1, 1], "file_name": "x\xff\xfe.flac"}',
      b'{"units": [1, 2], "duration": [1, 1], "file_name": ',
      b'{"units": "12", "duration": [1], "file_name": "y.flac"}',
  ]
  expected = {2: "unit_range", 3: "unit_range", 4: "durations", 5: "durations", 6: "word_times",
              7: "word_times", 8: "word_times", 9: "missing_alignment", 10: "empty", 11: "empty", 12: "json",
              13: "utf8", 14: "json", 15: "malformed"}
  path = _jsonl(tmp_path / "bad.jsonl", lines)
  manifest, out = _prep(tmp_path, "interleaved", [path], alignment_dir=str(align_dir), validation_count=0)
  got = {r["line"]: r["category"] for r in manifest["rejected"]}
  assert got == expected
  assert all(r["file"] == str(path) and r["reason"] for r in manifest["rejected"])
  reasons = {r["line"]: r["reason"] for r in manifest["rejected"]}
  assert "500" in reasons[2] and "0..499" in reasons[2] and "backwards" in reasons[6] and "past" in reasons[8]
  assert "good.flac" in [d.doc_id for d in _all_docs(out)["train"]] and manifest["counts"]["documents"] == 1
  with pytest.raises(slamkit.Rejected, match=r"bad.jsonl:2: unit id 500"):
    _prep(tmp_path, "interleaved", [path], name="strict", alignment_dir=str(align_dir), strict=True)


def test_text_inputs_and_token_counts(tmp_path, llama3_tokenizer_dir):
  texts = ["A first document.", " Second one,\nwith a newline.", "Third <speech> literal marker."]
  jsonl = _jsonl(tmp_path / "t.jsonl", [{"text": t} for t in texts] + [{"text": "   "}, {"body": "x"}])
  txt = tmp_path / "book.txt"
  txt.write_text("A whole book in one file.\n")
  tokens = _jsonl(tmp_path / "corpus_tokens.jsonl", [{"file_name": "rp1", "audio_repr": "Red pajama text."}])
  manifest, out = _prep(tmp_path, "text", [jsonl, txt, tokens], validation_count=0, tokenizer_dir=llama3_tokenizer_dir)
  docs = _all_docs(out)["train"]
  assert [d.text for d in docs] == texts + ["A whole book in one file.\n", "Red pajama text."]
  assert docs[0].doc_id == f"{jsonl}:1" and docs[3].doc_id == str(txt) and docs[4].doc_id == "rp1"
  assert {r["line"]: r["category"] for r in manifest["rejected"]} == {4: "empty", 5: "malformed"}
  tok = AutoTokenizer.from_pretrained(llama3_tokenizer_dir)
  vocab.extend_tokenizer(tok)  # the counted text of doc 3 holds a literal <speech>, not counted as text
  n = sum(len(tok.encode(t, add_special_tokens=False)) for t in [d.text for d in docs]) - 1
  assert manifest["counts"]["text_tokens"] == n
  assert manifest["counts"]["words"] == sum(len(d.text.split()) for d in docs)


def test_parallel_prepare_equals_serial_and_overwrite_guard(tmp_path):
  paths = synthetic.write_corpus(str(tmp_path / "in"), num_utterances=600, num_text=0, seed=2,
                                 seconds=(1.0, 3.0))
  m1, out1 = _prep(tmp_path, "speech", [paths["features"]], name="s1", records_per_shard=250)
  m2, out2 = _prep(tmp_path, "speech", [paths["features"]], name="s2", records_per_shard=250, num_workers=2)
  assert m1["splits"] == m2["splits"] and m1["splits"]["train"]["num_shards"] == 3
  for split in records.SPLITS:
    for a, b in zip(records.split_files(out1, split), records.split_files(out2, split)):
      assert open(a, "rb").read() == open(b, "rb").read()
  with pytest.raises(FileExistsError):
    _prep(tmp_path, "speech", [paths["features"]], name="s1")
  _prep(tmp_path, "speech", [paths["features"]], name="s1", overwrite=True)


def test_command_line_tools(tmp_path):
  """tools/prepare_data.py (summary, --strict exit code) and tools/inspect_data.py (one document per line)."""
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  texts = _jsonl(tmp_path / "t.jsonl", [{"text": "One.\nTwo lines."}, {"text": " Second doc."}, {"text": ""}])
  run = lambda *a: subprocess.run([sys.executable, *a], cwd=root, capture_output=True, text=True,  # noqa: E731
                                  env={**os.environ, "PYTHONPATH": root}, timeout=120)
  out = str(tmp_path / "out")
  r = run("tools/prepare_data.py", "--kind=text", f"--input={texts}", f"--out_dir={out}", "--validation_count=0",
          "--num_workers=1")
  assert r.returncode == 0, r.stderr
  assert "prepared 2 text documents" in r.stdout and "empty" in r.stdout
  r = run("tools/inspect_data.py", f"--data_dir={out}", "--num=5")
  assert r.returncode == 0, r.stderr
  assert r.stdout.splitlines() == ["One.\\nTwo lines.", " Second doc."]
  r = run("tools/prepare_data.py", "--kind=text", f"--input={texts}", f"--out_dir={tmp_path / 'o2'}", "--strict",
          "--num_workers=1")
  assert r.returncode == 2 and "t.jsonl:3: empty document" in r.stderr
