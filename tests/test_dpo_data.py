"""Preference data: slamkit's preference JSONL (audio_repr or units + durations) through
`tools/prepare_data.py --kind=preference` (rejected lines with file, line and reason; slamkit's repetition filter),
and the DPO batch iterator (layout, host shares, finite epochs, exact resume)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from slm_jax.data import preference, records
from slm_jax.vocab import VocabLayout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUT = VocabLayout(base_size=1000, num_units=500, bos_id=7, eos_id=9)


def _repr(units):
  return {"audio_repr": "".join(f"<Un{u}>" for u in units)}


def _lines():
  ok = lambda i: {"prompt_path": f"p{i}.wav", "chosen_path": f"c{i}.wav", "rejected_path": f"r{i}.wav",  # noqa: E731
                  "prompt": _repr([i, i + 1]), "chosen": {"units": [3, 4, 5], "duration": [1, 2, 1]},
                  "rejected": _repr([6])}
  lines = [json.dumps(ok(i)) for i in range(20)]
  bad_unit = ok(20)
  bad_unit["chosen"] = {"units": [3, 500]}
  bad_dur = ok(21)
  bad_dur["rejected"] = {"units": [3, 4], "duration": [1]}
  repeated = dict(ok(22), prompt_text="the cat the cat", chosen_text="the cat the cat")  # auto-BLEU-2 = 1.0
  varied = dict(ok(23), prompt_text="once upon a time", chosen_text="there was a king")  # 0.0: kept
  missing = ok(24)
  del missing["rejected"]
  return lines + [json.dumps(bad_unit), json.dumps(bad_dur), json.dumps(repeated), json.dumps(varied),
                  json.dumps(missing), "{not json"]


def test_prepare_tool_keeps_good_pairs_and_reports_the_rest(tmp_path):
  src = tmp_path / "pairs.jsonl"
  src.write_text("\n".join(_lines()) + "\n")
  out = tmp_path / "prepared"
  env = dict(os.environ, PYTHONPATH=ROOT)
  run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "prepare_data.py"), "--kind=preference",
                        f"--input={src}", f"--out_dir={out}", "--validation_count=2"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  m = records.read_manifest(str(out))
  assert m["kind"] == "preference" and m["counts"]["pairs"] == 21
  assert (m["splits"]["train"]["num_examples"], m["splits"]["validation"]["num_examples"]) == (19, 2)
  reasons = {r["line"]: (r["category"], r["reason"]) for r in m["rejected"]}
  assert sorted(reasons) == [21, 22, 23, 25, 26]
  assert reasons[21][0] == "unit_range" and "'chosen'" in reasons[21][1] and "500" in reasons[21][1]
  assert reasons[22][0] == "durations" and "'rejected'" in reasons[22][1]
  assert reasons[23] == ("repetition", "auto-BLEU-2 of prompt_text + chosen_text is 1.000 (>= 0.3)")
  assert reasons[25][0] == "malformed" and "'rejected'" in reasons[25][1]
  assert reasons[26][0] == "json"
  import grain
  pairs = [preference.decode(r) for r in grain.sources.ArrayRecordDataSource(records.split_files(str(out), "train"))]
  assert pairs[0].chosen_units.tolist() == [3, 4, 5] and pairs[-1].prompt_text == "once upon a time"
  strict = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "prepare_data.py"), "--kind=preference",
                           f"--input={src}", f"--out_dir={tmp_path / 'strict'}", "--strict"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert strict.returncode == 2 and f"{src}:21:" in strict.stderr and "--strict" in strict.stderr


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  d = tmp_path_factory.mktemp("pref")
  rng = np.random.default_rng(0)
  with open(d / "in.jsonl", "w") as f:
    for i in range(11):
      f.write(json.dumps({"prompt_path": f"p{i}", "chosen_path": "c", "rejected_path": "r",
                          "prompt": _repr(rng.integers(0, 500, rng.integers(1, 6))),
                          "chosen": _repr(rng.integers(0, 500, rng.integers(1, 6))),
                          "rejected": _repr(rng.integers(0, 500, rng.integers(1, 6)))}) + "\n")
  preference.prepare([str(d / "in.jsonl")], str(d / "out"), validation_count=0, log=lambda s: None)
  return str(d / "out")


def test_iterator_batches_host_shares_epochs_and_exact_resume(prepared):
  kw = dict(seq_len=16, global_batch_size=4, seed=3)
  it = preference.PreferenceIterator(prepared, "train", LAYOUT, **kw)
  first = [next(it) for _ in range(5)]  # 20 pairs: crosses the epoch boundary at 11
  b = first[0]
  assert b["input_ids"].shape == (8, 16) and b["record_index"].shape == (8,) and "ref_logps" not in b
  assert (b["input_ids"][:, 0] == LAYOUT.bos_id).all()  # BOS first; rows 2i, 2i+1 share the prompt
  np.testing.assert_array_equal(b["record_index"][0::2], b["record_index"][1::2])
  for r in range(8):
    n = int(b["segment_ids"][r].sum())
    assert b["targets"][r, n - 1] == LAYOUT.eos_id and b["loss_mask"][r, n - 1] == 1  # EOS ends each continuation
  epoch0 = np.concatenate([x["record_index"][0::2] for x in first])[:11]
  assert sorted(epoch0.tolist()) == list(range(11)) and epoch0.tolist() != list(range(11))  # a permutation
  # exact resume from a saved state
  it2 = preference.PreferenceIterator(prepared, "train", LAYOUT, **kw)
  it2.set_state(_state_after(prepared, kw, 3))
  np.testing.assert_array_equal(next(it2)["input_ids"], first[3]["input_ids"])
  # two hosts: each gets its half of every global batch
  hosts = [preference.PreferenceIterator(prepared, "train", LAYOUT, process_index=i, process_count=2, **kw)
           for i in range(2)]
  for x in first[:2]:
    np.testing.assert_array_equal(np.concatenate([next(h)["input_ids"] for h in hosts]), x["input_ids"])
  # one finite unshuffled epoch: stored order, the last batch padded with empty pairs; stored ref log-probs ride along
  ref = np.arange(22, dtype=np.float32).reshape(11, 2)
  val = list(preference.PreferenceIterator(prepared, "train", LAYOUT, num_epochs=1, shuffle=False,
                                           ref_logps=ref, **kw))
  assert len(val) == 3 and val[2]["record_index"].tolist() == [8, 8, 9, 9, 10, 10, -1, -1]
  assert val[2]["loss_mask"][6:].sum() == 0 and val[2]["ref_logps"].tolist() == [16, 17, 18, 19, 20, 21, 0, 0]


def _state_after(prepared, kw, n):
  it = preference.PreferenceIterator(prepared, "train", LAYOUT, **kw)
  for _ in range(n):
    next(it)
  return it.get_state()


def test_iterator_shared_prompt_rows_hold_each_pair_once(prepared):
  """shared_prompt=True: the pairs of the two-row iterator, in the same order, one `shared_pair_row` each, with the
  stored reference log-probs per sequence (chosen, rejected)."""
  kw = dict(seq_len=16, global_batch_size=4, seed=3, max_prompt_len=6)
  br = preference.shared_branches(16, 6)
  rows = preference.PreferenceIterator(prepared, "train", LAYOUT, **kw)
  shared = preference.PreferenceIterator(prepared, "train", LAYOUT, shared_prompt=True, **kw)
  for _ in range(3):
    a, b = next(rows), next(shared)
    assert b["input_ids"].shape == (4, br.total) == (4, 2 * 16 + 1 - 6)
    np.testing.assert_array_equal(b["record_index"], a["record_index"][0::2])
    for r, i in enumerate(b["record_index"]):
      want = preference.shared_pair_row(preference.decode(shared.source[int(i)]), LAYOUT, 16, 6)
      for k in want:
        np.testing.assert_array_equal(b[k][r], want[k][0], err_msg=k)
    assert b["loss_mask"].sum() == a["loss_mask"].sum()  # the same continuation tokens count
  ref = np.arange(22, dtype=np.float32).reshape(11, 2)
  val = list(preference.PreferenceIterator(prepared, "train", LAYOUT, num_epochs=1, shuffle=False, ref_logps=ref,
                                           shared_prompt=True, **kw))
  assert len(val) == 3 and val[2]["record_index"].tolist() == [8, 9, 10, -1]
  assert val[2]["ref_logps"].tolist() == [16, 17, 18, 19, 20, 21, 0, 0] and val[2]["loss_mask"][3].sum() == 0
