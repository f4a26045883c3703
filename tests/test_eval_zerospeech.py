"""ZeroSpeech 2021 arithmetic on hand-made gold.csv files against hand-computed numbers (docs/reference.md §6)."""
import math
import os

import numpy as np
import pytest

from slm_jax.eval import benchmarks as bm
from slm_jax.eval import zerospeech as zs
from slm_jax.eval.scoring import pair_outcomes
from test_eval_helpers import write_gold

LEX_HEADER = "filename,id,voice,frequency,word,phones,length,correct"
# (id, frequency, length, [(voice, word score, non-word score)]); outcome per voice in the comment
LEX = [
    ("w1", 0, 4, [("v1", -1.0, -2.0), ("v2", -3.0, -2.0)]),                     # 1, 0        -> 0.5  oov
    ("w2", 5, 4, [("v1", -1.5, -1.5), ("v2", -0.5, -0.9)]),                     # tie .5, 1   -> 0.75 '6-20' (!)
    ("w3", 1, 5, [("v1", -0.1, -0.2)]),                                         # 1           -> 1    '1-5'
    ("w4", 20, 5, [("v1", -2.0, -1.0)]),                                        # 0           -> 0    '21-100' (!)
    ("w5", 150, 6, [("v1", -1.0, -1.1), ("v2", -1.0, -1.2), ("v3", -5.0, -1.0)]),  # 1, 1, 0 -> 2/3 '>100'
    ("w6", 4, 4, [("v1", -3.0, -2.9)]),                                         # 0           -> 0    '1-5'
]


def _lexical_folder(root):
  rows, scores = [], {}
  for id_, freq, length, voices in LEX:
    for voice, sw, snw in voices:
      w, nw = f"{id_}_{voice}_w", f"{id_}_{voice}_nw"
      pair = [f"{w},{id_},{voice},{freq},word{id_},p h,{length},1", f"{nw},{id_},{voice},{freq},nonw{id_},p h,{length},0"]
      rows += pair[::-1] if id_ == "w5" else pair  # within-pair order must not matter
      scores[w], scores[nw] = sw, snw
  folder = os.path.join(root, "lexical", "dev")
  write_gold(os.path.join(folder, "gold.csv"), LEX_HEADER, rows)
  return scores


def test_lexical_official_arithmetic(tmp_path):
  scores = _lexical_folder(str(tmp_path))
  bench = bm.load_benchmark("swuggy", str(tmp_path), split="dev")
  assert bench.info["layout"] == "zerospeech" and len(bench.pairs) == 10
  for p in bench.pairs:  # paired by (id, voice)
    g, b = p.meta["gold"]
    assert (g["id"], g["voice"], g["correct"], b["correct"]) == (b["id"], b["voice"], 1, 0)
  out = pair_outcomes([scores[p.correct] for p in bench.pairs], [scores[p.wrong] for p in bench.pairs])
  res = bm.summarise(bench, out)
  per_id = [0.5, 0.75, 1.0, 0.0, 2 / 3, 0.0]
  assert res["accuracy"] == pytest.approx(sum(per_id) / 6)  # 0.486111: mean over ids of means over voices
  assert res["num_ids"] == 6
  bands = res["breakdowns"]["by_frequency"]
  assert set(bands) == {"oov", "1-5", "6-20", "21-100", ">100"}
  assert bands["oov"] == {"n": 1, "score": 0.5, "std": None}
  assert bands["1-5"]["n"] == 2 and bands["1-5"]["score"] == pytest.approx(0.5)
  assert bands["1-5"]["std"] == pytest.approx(math.sqrt(0.5))  # pandas std (ddof 1) of [1, 0]
  assert bands["6-20"] == {"n": 1, "score": 0.75, "std": None}   # frequency 5: pandas.cut([0,1,5,20,100,inf), right=False)
  assert bands["21-100"] == {"n": 1, "score": 0.0, "std": None}  # frequency 20
  assert bands[">100"]["score"] == pytest.approx(2 / 3)
  assert res["breakdowns"]["in_vocab"] == pytest.approx((0.75 + 1 + 0 + 2 / 3 + 0) / 5)  # leaderboard weighted mean
  by_len = res["breakdowns"]["by_length"]
  assert by_len["4"]["score"] == pytest.approx((0.5 + 0.75 + 0.0) / 3) and by_len["6"]["n"] == 1


def test_frequency_bands_edges():
  assert [zs.band(f) for f in (0, 1, 4, 5, 19, 20, 99, 100, 10**6, None)] == [
      "oov", "1-5", "1-5", "6-20", "6-20", "21-100", "21-100", ">100", ">100", None]


SYN_HEADER = "filename,id,voice,type,subtype,transcription,correct"


def test_syntactic_official_arithmetic(tmp_path):
  # (filename, id, voice, type, subtype, correct, score); positional pairing of correct / incorrect rows
  rows = [
      ("a1", 1, "v1", "anaphor", "gender", 1, -1.0), ("a1x", 1, "v1", "anaphor", "gender", 0, -2.0),  # 1
      ("a2", 1, "v2", "anaphor", "gender", 1, -2.0), ("a3", 2, "v1", "anaphor", "gender", 1, -3.0),
      ("a2x", 1, "v2", "anaphor", "gender", 0, -2.0), ("a3x", 2, "v1", "anaphor", "gender", 0, -1.0),  # .5, 0
      ("n1", 1, "v1", "anaphor", "number", 1, -1.0), ("n1x", 1, "v1", "anaphor", "number", 0, -1.5),  # 1
      ("i1", 1, "v1", "island", "adjunct", 1, -1.0), ("i1x", 1, "v1", "island", "adjunct", 0, -4.0),  # 1
      ("i2", 1, "v2", "island", "adjunct", 1, -0.5), ("i2x", 1, "v2", "island", "adjunct", 0, -0.7),  # 1
  ]
  write_gold(str(tmp_path / "gold.csv"), SYN_HEADER,
             [f"{f},{i},{v},{t},{s},sentence {f},{c}" for f, i, v, t, s, c, _ in rows])
  scores = {r[0]: r[6] for r in rows}
  bench = bm.load_benchmark("sblimp", str(tmp_path))
  assert [(p.correct, p.wrong) for p in bench.pairs] == [
      ("a1", "a1x"), ("a2", "a2x"), ("a3", "a3x"), ("n1", "n1x"), ("i1", "i1x"), ("i2", "i2x")]
  res = bm.summarise(bench, pair_outcomes([scores[p.correct] for p in bench.pairs],
                                          [scores[p.wrong] for p in bench.pairs]))
  # groups (type, subtype, id): anaphor/gender/1 -> (1 + .5)/2, anaphor/gender/2 -> 0, anaphor/number/1 -> 1,
  # island/adjunct/1 -> 1
  assert res["accuracy"] == pytest.approx((0.75 + 0 + 1 + 1) / 4)
  by_type = res["breakdowns"]["by_type"]
  assert by_type["anaphor"]["n"] == 3 and by_type["anaphor"]["score"] == pytest.approx(1.75 / 3)
  assert by_type["anaphor"]["std"] == pytest.approx(np.std([0.75, 0, 1], ddof=1))
  assert by_type["island"] == {"n": 1, "score": 1.0, "std": None}


def test_submission_files(tmp_path):
  scores = _lexical_folder(str(tmp_path / "data"))
  bench = bm.load_benchmark("swuggy", str(tmp_path / "data"))
  path = bm.write_submission(str(tmp_path / "sub"), bench, scores)
  assert path == str(tmp_path / "sub" / "lexical" / "dev.txt")
  lines = open(path).read().splitlines()
  assert len(lines) == 20 and lines[0] == "w1_v1_w -1.0"
  assert {ln.split()[0]: float(ln.split()[1]) for ln in lines} == scores


def test_gold_errors(tmp_path):
  write_gold(str(tmp_path / "a" / "gold.csv"), LEX_HEADER,
             ["x1,w1,v1,3,cat,k a t,3,1", "x2,w1,v1,3,kat,k a t,3,1", "x3,w2,v1,3,dog,d o g,3,0"])
  with pytest.raises(zs.GoldError, match=r"id 'w1' voice 'v1': 2 word\(s\) and 0 non-word\(s\) \(lines 2, 3\)"):
    bm.load_benchmark("swuggy", str(tmp_path / "a"))
  write_gold(str(tmp_path / "b" / "gold.csv"), LEX_HEADER, ["x1,w1,v1,3,cat,k a t,3,yes"])
  with pytest.raises(zs.GoldError, match="line 2: field 'correct' must be 0 or 1"):
    bm.load_benchmark("swuggy", str(tmp_path / "b"))
  write_gold(str(tmp_path / "c" / "gold.csv"), SYN_HEADER,
             ["s1,1,v1,anaphor,gender,a,1", "s2,1,v1,anaphor,gender,b,1", "s3,1,v1,anaphor,gender,c,0"])
  with pytest.raises(zs.GoldError, match="2 correct and 1 incorrect rows"):
    bm.load_benchmark("sblimp", str(tmp_path / "c"))
  write_gold(str(tmp_path / "d" / "gold.csv"), "filename,id,voice,word,correct", ["x,1,v,a,1"])
  with pytest.raises(zs.GoldError, match="missing column"):
    bm.load_benchmark("swuggy", str(tmp_path / "d"))
