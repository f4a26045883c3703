"""Spoken preference pairs from the demo speech, for the DPO demo (configs/dpo_demo.py).

  python tools/make_demo_preferences.py [--demo_dir=data/demo] [--out_dir=data/demo/prepared/preference]

Each demo utterance is cut at the word boundary nearest its middle: the prompt is the speech before it, the chosen
continuation the true rest of the utterance, the rejected one the rest of another utterance of the same book
(every other utterance makes a pair; the ones between only lend their continuation as a rejected one, so no
continuation is chosen in one pair and rejected in another). The pairs are written in slamkit's preference-alignment format (features with durations and
the words as prompt_text / chosen_text / rejected_text) and then prepared by the same code as
`tools/prepare_data.py --kind=preference` (repetition filter included). Deterministic; a few seconds.
"""
import json
import os
import tempfile

import numpy as np
from absl import app, flags

from slm_jax import console
from slm_jax.frames import unit_end_times

_DEMO = flags.DEFINE_string("demo_dir", "data/demo", "Demo data folder (raw/features.jsonl, raw/alignments).")
_OUT = flags.DEFINE_string("out_dir", None, "Prepared output folder (default: <demo_dir>/prepared/preference).")
_VAL = flags.DEFINE_integer("validation_count", 16, "Pairs (the first ones) kept for validation.")
_MAX = flags.DEFINE_integer("max_utterances", 240, "Use the first N demo utterances (0: all 844); small on disk.")


def split_utterance(feat: dict, words: list) -> dict | None:
  """{prompt, continuation: {units, duration}, prompt_text, continuation_text} cut at the middle word boundary."""
  if len(words) < 4:
    return None
  units, dur = np.asarray(feat["units"]), np.asarray(feat["duration"])
  ends = unit_end_times(dur)
  k = len(words) // 2
  t = float(words[k][1])  # the start of the first continuation word
  cut = int(np.searchsorted(ends, t + 1e-9, side="right"))  # units ending at or before t belong to the prompt
  if cut < 2 or len(units) - cut < 2:
    return None
  part = lambda a, b: {"units": units[a:b].tolist(), "duration": dur[a:b].tolist()}  # noqa: E731
  text = lambda ws: "".join(w[0] for w in ws).strip()  # noqa: E731
  return {"prompt": part(0, cut), "continuation": part(cut, len(units)), "prompt_text": text(words[:k]),
          "continuation_text": text(words[k:])}


def build_pairs(demo_dir: str, max_pairs: int = 0) -> list[dict]:
  feats = [json.loads(l) for l in open(os.path.join(demo_dir, "raw", "features.jsonl"))]
  if max_pairs:
    feats = feats[:max_pairs]
  items = []
  for f in feats:
    stem = os.path.splitext(os.path.basename(f["file_name"]))[0]
    with open(os.path.join(demo_dir, "raw", "alignments", stem + ".json")) as fh:
      words = json.load(fh)["aligned_text"]
    s = split_utterance(f, words)
    if s is not None:
      items.append((stem, f["file_name"], s))
  books = {}
  for i, (stem, _, _) in enumerate(items):
    books.setdefault(stem.split("_")[0], []).append(i)
  pairs = []
  for ids in books.values():  # even utterances make pairs, odd ones only lend their continuation as rejected
    donors = ids[1::2]
    for j, i in enumerate(ids[0::2]):
      if not donors:
        break
      other = donors[(j + len(donors) // 2) % len(donors)]
      (stem, path, s), (_, opath, o) = items[i], items[other]
      pairs.append({"prompt_path": f"{path}#prompt", "chosen_path": f"{path}#continuation",
                    "rejected_path": f"{opath}#continuation", "prompt": s["prompt"], "chosen": s["continuation"],
                    "rejected": o["continuation"], "prompt_text": s["prompt_text"],
                    "chosen_text": s["continuation_text"], "rejected_text": o["continuation_text"]})
  return pairs


def main(argv):
  del argv
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  from slm_jax.data import preference
  out = os.path.abspath(_OUT.value or os.path.join(_DEMO.value, "prepared", "preference"))
  pairs = build_pairs(_DEMO.value, _MAX.value)
  cwd = os.getcwd()
  with tempfile.TemporaryDirectory() as tmp:
    os.chdir(tmp)  # the manifest names the input file relative to it (rejected lines: file and line)
    try:
      with open("demo_preferences.jsonl", "w") as f:
        for p in pairs:
          f.write(json.dumps(p) + "\n")
      preference.prepare(["demo_preferences.jsonl"], out, validation_count=_VAL.value, overwrite=True)
    finally:
      os.chdir(cwd)


if __name__ == "__main__":
  app.run(main)
