"""StoryCloze naming conventions, slamkit pre-paired folders, multi-speaker and cross-modal sets (docs/reference.md §6)."""
import os

import numpy as np
import pytest

from slm_jax.eval import benchmarks as bm
from slm_jax.eval import storycloze as sc
from slm_jax.eval.inputs import UnitsFile, UnitsMissing
from slm_jax.vocab import Encoder, extend_tokenizer
from test_eval_helpers import word_tokenizer, write_units


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
  tok = word_tokenizer(str(tmp_path_factory.mktemp("tok")))
  return Encoder(tok, extend_tokenizer(tok, 500))


def _touch(folder, names):
  os.makedirs(folder, exist_ok=True)
  for n in names:
    open(os.path.join(folder, n), "wb").close()


def _stories(n=12, seed=0):
  rng = np.random.RandomState(seed)
  return [(f"st{i:03d}", rng.randint(0, 500, rng.randint(3, 9)), rng.randint(0, 500, rng.randint(3, 9)))
          for i in range(n)]


def _pairs_ids(bench, units, encoder):
  seqs = bm.resolve(bench, encoder, units)
  return [(seqs[p.correct].tolist(), seqs[p.wrong].tolist()) for p in bench.pairs]


def test_both_storycloze_conventions_give_the_same_pairs(tmp_path, encoder):
  stories = _stories()
  named, slam = str(tmp_path / "named"), str(tmp_path / "slamkit")
  table = {}
  for i, (sid, good, bad) in enumerate(stories):
    n = i + 1  # 1..12: string order would put 10 before 2
    _touch(named, [f"{n}_{sid}_correct.wav", f"{n}_{sid}_incorrect.wav"])
    _touch(slam, [f"{2 * i}_{sid}.wav", f"{2 * i + 1}_{sid}.wav"])
    table[f"{n}_{sid}_correct"], table[f"{n}_{sid}_incorrect"] = good, bad
    table[f"{2 * i}_{sid}"], table[f"{2 * i + 1}_{sid}"] = good, bad
  write_units(str(tmp_path / "units.jsonl"), table)
  units = UnitsFile(str(tmp_path / "units.jsonl"))
  a = bm.load_benchmark("ssc", named, units=units)
  b = bm.load_benchmark("ssc", slam, units=units)
  assert a.info["layout"] == "named" and b.info["layout"] == "slamkit"
  pa, pb = _pairs_ids(a, units, encoder), _pairs_ids(b, units, encoder)
  assert len(pa) == 12 and pa == pb
  bos, off = encoder.layout.bos_id, encoder.layout.unit_offset
  assert pa[0] == ([bos] + (stories[0][1] + off).tolist(), [bos] + (stories[0][2] + off).tolist())
  assert [p.meta["base"] for p in a.pairs[:3]] == [f"1_{stories[0][0]}", f"2_{stories[1][0]}", f"3_{stories[2][0]}"]


def test_multi_speaker_and_sblimp_separator(tmp_path, encoder):
  table = {}
  for spk in ("spk_a", "spk_b"):
    for i in range(3):
      _touch(str(tmp_path / "ms" / spk), [f"{2 * i}_s{i}.wav", f"{2 * i + 1}_s{i}.wav"])
      table[f"{2 * i}_s{i}"], table[f"{2 * i + 1}_s{i}"] = [1, 2, 3], [4, 5]
  write_units(str(tmp_path / "u.jsonl"), table)
  units = UnitsFile(str(tmp_path / "u.jsonl"))
  bench = bm.load_benchmark("tsc", str(tmp_path / "ms"), units=units)
  assert [p.meta["speaker"] for p in bench.pairs] == ["spk_a"] * 3 + ["spk_b"] * 3
  assert bench.pairs[3].correct == "spk_b/0_s0" and bench.pairs[3].wrong == "spk_b/1_s0"
  res = bm.summarise(bench, np.array([1, 1, 0, 0.5, 1, 1]))
  assert res["accuracy"] == pytest.approx(4.5 / 6)
  assert res["breakdowns"]["by_speaker"] == {"spk_a": {"n": 3, "score": pytest.approx(2 / 3)},
                                             "spk_b": {"n": 3, "score": pytest.approx(2.5 / 3)}}
  # slamkit's sBLIMP folders use '+' before the leading integer's rest
  _touch(str(tmp_path / "blimp"), ["0+a_b.wav", "1+a_c.wav", "10+x.wav", "11+y.wav", "2+z.wav", "3+w.wav"])
  bench = bm.load_benchmark("sblimp", str(tmp_path / "blimp"), units=units)
  assert [(p.correct, p.wrong) for p in bench.pairs] == [("0+a_b", "1+a_c"), ("2+z", "3+w"), ("10+x", "11+y")]


def test_layout_errors(tmp_path):
  _touch(str(tmp_path / "odd"), ["0_a.wav", "1_a.wav", "2_b.wav"])
  with pytest.raises(sc.LayoutError, match="3 files, an odd number: '2_b' has no partner"):
    bm.load_benchmark("ssc", str(tmp_path / "odd"))
  _touch(str(tmp_path / "dup"), ["0_a.wav", "0_b.wav"])
  with pytest.raises(sc.LayoutError, match="share the leading integer 0"):
    bm.load_benchmark("ssc", str(tmp_path / "dup"))
  _touch(str(tmp_path / "unpaired"), ["1_x_correct.wav", "1_x_incorrect.wav", "2_y_correct.wav"])
  with pytest.raises(sc.LayoutError, match="2_y: no 2_y_incorrect"):
    bm.load_benchmark("ssc", str(tmp_path / "unpaired"))
  _touch(str(tmp_path / "noint"), ["abc_1.wav", "abd_2.wav"])
  with pytest.raises(sc.LayoutError, match="'abc_1' does not start with an integer"):
    bm.load_benchmark("ssc", str(tmp_path / "noint"))


def test_units_file_errors(tmp_path, encoder):
  _touch(str(tmp_path / "d"), ["0_a.wav", "1_a.wav"])
  write_units(str(tmp_path / "u.jsonl"), {"0_a": [1, 2]})
  units = UnitsFile(str(tmp_path / "u.jsonl"))
  bench = bm.load_benchmark("ssc", str(tmp_path / "d"), units=units)
  with pytest.raises(UnitsMissing, match=r"u.jsonl has no entry for stem '1_a' \(needed by .*d/1_a.wav\)"):
    bm.resolve(bench, encoder, units)
  with pytest.raises(bm.BenchmarkError, match="audio input needs --encoder/--kmeans"):
    bm.resolve(bench, encoder, None)
  with open(tmp_path / "bad.jsonl", "w") as f:
    f.write('{"units": [1], "file_name": "x/a.wav"}\n{"units": [2], "file_name": "y/a.flac"}\n')
  with pytest.raises(ValueError, match="line 2: stem 'a' .* already on line 1"):
    UnitsFile(str(tmp_path / "bad.jsonl"))


def test_cross_modal_sequences(tmp_path, encoder):
  d = tmp_path / "cm"
  d.mkdir()
  texts = {"mutual": "the cat sat on the mat .", "correct": "she was happy .", "incorrect": "he ran to park ."}
  units = {"mutual": [5, 6, 7], "correct": [7, 8], "incorrect": [9, 9, 4]}
  for part in texts:
    (d / f"s1_{part}.txt").write_text(texts[part] + "\n")
    (d / f"s1_{part}.wav").write_bytes(b"")
  write_units(str(tmp_path / "u.jsonl"), {f"s1_{p}": u for p, u in units.items()})
  src = UnitsFile(str(tmp_path / "u.jsonl"))
  bench = bm.load_benchmark("cm_tsc", str(d), units=src)
  assert bench.info["modes"] == ["tt", "ts", "st", "ss"] and len(bench.pairs) == 4
  seqs = bm.resolve(bench, encoder, src)
  lay, tok = encoder.layout, encoder.tokenizer
  bos, S, T, off = lay.bos_id, lay.speech_id, lay.text_id, lay.unit_offset
  ids = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
  u = lambda xs: [x + off for x in xs]  # noqa: E731
  assert seqs["s1|tt|correct"].tolist() == [bos, T] + ids("the cat sat on the mat . she was happy .")
  assert seqs["s1|ts|incorrect"].tolist() == [bos, T] + ids(texts["mutual"]) + [S] + u([9, 9, 4])
  assert seqs["s1|st|correct"].tolist() == [bos, S] + u([5, 6, 7]) + [T] + ids(texts["correct"])
  assert seqs["s1|ss|correct"].tolist() == [bos, S] + u([5, 6, 7, 8])  # the repeat at the junction merges
  assert seqs["s1|ss|incorrect"].tolist() == [bos, S] + u([5, 6, 7, 9, 9, 4])
  res = bm.summarise(bench, np.array([1.0, 0.0, 0.5, 1.0]))
  assert res["breakdowns"]["by_mode"]["st"] == {"n": 1, "score": 0.5}
  # slamkit joins prompt and ending text with nothing
  raw = bm.load_benchmark("cm_tsc", str(d), cm_modes=["tt"], cm_text_join="", units=src)
  assert raw.items["s1|tt|correct"].pieces == [("marker", "text"), ("text", texts["mutual"] + texts["correct"])]
  (d / "s1_correct.txt").unlink()
  with pytest.raises(bm.BenchmarkError, match=r"mode tt needs files that are missing: s1_correct.txt"):
    bm.load_benchmark("cm_tsc", str(d), cm_modes=["tt"], units=src)
  assert bm.load_benchmark("cm_tsc", str(d), units=src).info["modes"] == ["ts", "ss"]
