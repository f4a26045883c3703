"""The committed demo dataset (data/demo) is consistent, and flite's word times are exact and deterministic."""
import collections
import csv
import json
import os

import numpy as np
import pytest

from slm_jax.demo import tts

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "demo")
FRAME = 0.04


def _jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _stems(path):
  return {os.path.splitext(os.path.basename(r["file_name"]))[0]: r for r in _jsonl(path)}


def _check_units(recs):
  for r in recs:
    assert len(r["units"]) == len(r["duration"]) > 0, r["file_name"]
    assert min(r["units"]) >= 0 and max(r["units"]) < 500 and min(r["duration"]) >= 1
    assert all(a != b for a, b in zip(r["units"], r["units"][1:])), r["file_name"]


def test_raw_features_alignments_and_text():
  feats = _jsonl(os.path.join(DEMO, "raw", "features.jsonl"))
  assert len(feats) > 500
  _check_units(feats)
  for r in feats:
    stem = os.path.splitext(os.path.basename(r["file_name"]))[0]
    with open(os.path.join(DEMO, "raw", "alignments", stem + ".json"), encoding="utf-8") as f:
      words = json.load(f)["aligned_text"]
    end_of_audio = (sum(r["duration"]) + 1) * FRAME  # frames = samples // 640, so audio < (frames + 1) * 0.04 s
    assert words and all(w.startswith(" ") and w.strip() for w, _, _ in words)
    assert all(s < e for _, s, e in words) and all(b[1] >= a[2] for a, b in zip(words, words[1:]))
    assert words[-1][2] <= end_of_audio, stem
  texts = _jsonl(os.path.join(DEMO, "raw", "text.jsonl"))
  assert len(texts) > 20 and all(len(t["text"].split()) >= 50 for t in texts)
  assert np.load(os.path.join(DEMO, "kmeans_mfcc.npy")).shape == (500, 39)


def test_swuggy_look_alike_has_complete_pairs_and_bands():
  with open(os.path.join(DEMO, "eval", "swuggy", "gold.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["filename", "id", "voice", "frequency", "word", "phones", "length", "correct"]
  units = _stems(os.path.join(DEMO, "eval", "swuggy", "units.jsonl"))
  assert {r["filename"] for r in rows} == set(units)
  _check_units(units.values())
  pairs = collections.defaultdict(list)
  for r in rows:
    pairs[(r["id"], r["voice"])].append(r)
    assert int(r["length"]) == len(r["phones"].split())
  assert all(sorted(x["correct"] for x in p) == ["0", "1"] for p in pairs.values())
  assert all(p[0]["word"] != p[1]["word"] for p in pairs.values())
  freqs = [int(r["frequency"]) for r in rows if r["correct"] == "1"]
  for lo, hi in ((0, 0), (1, 5), (6, 20), (21, 100), (101, 10 ** 9)):
    assert any(lo <= f <= hi for f in freqs), (lo, hi)


def _pair_unit_differences(name, key=None):
  """Per pair (id, voice) of a look-alike set: #units(wrong) - #units(correct), and the same for column `key`."""
  with open(os.path.join(DEMO, "eval", name, "gold.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
  units = _stems(os.path.join(DEMO, "eval", name, "units.jsonl"))
  pairs = collections.defaultdict(dict)
  for r in rows:
    pairs[(r["id"], r["voice"])][r["correct"]] = r
  n = lambda r: len(units[r["filename"]]["units"])  # noqa: E731
  d_units = np.array([n(p["0"]) - n(p["1"]) for p in pairs.values()])
  d_key = np.array([int(p["0"][key]) - int(p["1"][key]) for p in pairs.values()]) if key else None
  return d_units, d_key


def _assert_balanced(d, what):
  """Sign test and paired mean test at the 1% level: the wrong item is longer about as often as it is shorter."""
  longer, shorter = int((d > 0).sum()), int((d < 0).sum())
  z_sign = abs(longer - shorter) / np.sqrt(longer + shorter)
  z_mean = abs(d.mean()) / (d.std(ddof=1) / np.sqrt(len(d)))
  assert z_sign < 2.576 and z_mean < 2.576, (what, longer, shorter, float(d.mean()))


def test_swuggy_pairs_are_matched_in_phones_and_balanced_in_units():
  d_units, d_phones = _pair_unit_differences("swuggy", "length")
  assert len(d_units) > 600 and not d_phones.any()  # Wuggy's matching: same phone count in every pair
  _assert_balanced(d_units, "swuggy units")


def test_sblimp_pairs_are_balanced_in_units():
  d_units, _ = _pair_unit_differences("sblimp")
  _assert_balanced(d_units, "sblimp units")


def test_sblimp_and_tsc_look_alikes():
  with open(os.path.join(DEMO, "eval", "sblimp", "gold.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["filename", "id", "voice", "type", "subtype", "transcription", "correct"]
  good = [r for r in rows if r["correct"] == "1"]
  bad = [r for r in rows if r["correct"] == "0"]
  assert len(good) == len(bad) > 100
  for g, b in zip(good, bad):  # positional pairing, as the official evaluator
    assert (g["id"], g["voice"], g["type"], g["subtype"]) == (b["id"], b["voice"], b["type"], b["subtype"])
    assert g["transcription"] != b["transcription"]
  assert {r["filename"] for r in rows} == set(_stems(os.path.join(DEMO, "eval", "sblimp", "units.jsonl")))
  tsc = _stems(os.path.join(DEMO, "eval", "tsc", "units.jsonl"))
  _check_units(tsc.values())
  stories = collections.defaultdict(set)
  for s in tsc:
    n, sid, kind = s.split("_")
    stories[(n, sid)].add(kind)
  assert len(stories) > 50 and all(k == {"correct", "incorrect"} for k in stories.values())
  cm = _stems(os.path.join(DEMO, "eval", "cm_tsc", "units.jsonl"))
  texts = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(DEMO, "eval", "cm_tsc", "text"))}
  assert set(cm) == texts == {f"{n}_{sid}_{k}" for n, sid in stories for k in ("mutual", "correct", "incorrect")}
  for n, sid in stories:  # prompt + ending frames make up the whole story's frames
    whole = sum(tsc[f"{n}_{sid}_correct"]["duration"])
    assert sum(cm[f"{n}_{sid}_mutual"]["duration"]) + sum(cm[f"{n}_{sid}_correct"]["duration"]) == whole


@pytest.fixture(scope="module")
def flite():
  try:
    return tts.Flite()
  except tts.TTSUnavailable as e:
    pytest.skip(f"flite not installed: {e}")


def test_flite_word_times_are_ordered_exact_and_deterministic(flite):
  text = "So she was considering -- in her own mind, 'as well as she could.'"
  a = flite.synthesize(text, "slt")
  flite.synthesize("Something else first, to move any random state.", "slt")
  b = flite.synthesize(text, "slt")
  np.testing.assert_array_equal(a.audio, b.audio)
  assert a.words == b.words and a.sample_rate == 16000
  assert [w for w, _, _ in a.words][:4] == ["So", "she", "was", "considering --"]  # unspoken "--" kept as text
  assert " ".join(w for w, _, _ in a.words) == text
  assert all(s < e <= len(a.audio) / 16000 for _, s, e in a.words)
  # exact: silence before the first word and after the last, speech energy inside each word
  sr = a.sample_rate
  first, last = a.words[0][1], a.words[-1][2]
  assert np.abs(a.audio[:int(first * sr) - 160]).max() < 0.02
  assert np.abs(a.audio[int(last * sr) + 160:]).max() < 0.02
  for _, s, e in a.words:
    assert np.sqrt(np.mean(a.audio[int(s * sr):int(e * sr)] ** 2)) > 0.01


def test_flite_voices_and_phones(flite):
  for voice in tts.FLITE_VOICES:
    s = flite.synthesize("Alice was here.", voice)
    assert [w for w, _, _ in s.words] == ["Alice", "was", "here."] and s.sample_rate == 16000
  assert flite.synthesize("cat", "slt").phones == ["k", "ae", "t"]
