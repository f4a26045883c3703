"""Builds data/demo/ reproducibly: flite speech with exact word times, stand-in MFCC units, slamkit-format raw
files, look-alike sWUGGY / sBLIMP / tSC sets, and the prepared datasets (slm_jax/demo/build.py).

  python tools/make_demo_data.py [--out_dir=data/demo] [--seed=0] [--jobs=2]
"""
import dataclasses
import json
import logging

from absl import app, flags

from slm_jax.demo import build as demo_data

_OUT = flags.DEFINE_string("out_dir", "data/demo", "Output folder.")
_AUDIO = flags.DEFINE_string("audio_dir", None, "Where the synthesised wavs go (default: <out_dir>/audio, not "
                             "committed; reused on reruns).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for voices, evaluation items and k-means.")
_JOBS = flags.DEFINE_integer("jobs", 2, "Synthesis processes.")
_MAX_UTTS = flags.DEFINE_integer("max_utterances", None, "Cap on spoken training utterances (quick runs).")
_PREPARE = flags.DEFINE_bool("prepare", True, "Also write prepared/ (the datasets configs/demo.py trains on).")


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  cfg = demo_data.Config(out_dir=_OUT.value, audio_dir=_AUDIO.value or f"{_OUT.value}/audio", seed=_SEED.value,
                         jobs=_JOBS.value, max_utterances=_MAX_UTTS.value, prepare=_PREPARE.value)
  print(json.dumps(dataclasses.asdict(cfg)))
  print(json.dumps(demo_data.build(cfg), indent=1))


if __name__ == "__main__":
  app.run(main)
