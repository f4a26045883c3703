"""Units -> 16 kHz wavs with a converted unit vocoder (tools/convert_vocoder.py).

  python tools/vocode.py --units=features.jsonl --vocoder=vocoders/mhubert25 --out_dir=wavs

Input: slamkit features JSONL, one clip per line: `units` (deduplicated) with `duration`, or `audio_repr`.
Durations come from the vocoder's duration predictor when it has one (unless --given_durations), else from
each line's `duration`. Writes OUT_DIR/<stem of file_name>.wav.
"""
import json
import sys
import time

from absl import app, flags

from slm_jax import console
from slm_jax.vocoder import Vocoder
from slm_jax.vocoder import records as vr

FLAGS = flags.FLAGS
flags.DEFINE_string("units", None, "slamkit features JSONL.", required=True)
flags.DEFINE_string("vocoder", None, "Converted vocoder folder (vocoder.json + params.npz).", required=True)
flags.DEFINE_string("out_dir", None, "Folder for the wavs.", required=True)
flags.DEFINE_bool("given_durations", False, "Use each line's `duration` even when the vocoder predicts them.")
flags.DEFINE_integer("batch_size", 8, "Clips per compiled call.")
flags.DEFINE_integer("bucket_frames", 50, "Frame counts are padded up to a multiple of this (one compile each).")


def main(argv):
  del argv
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  try:
    recs = vr.read_units_jsonl(FLAGS.units)
    voc = Vocoder.load(FLAGS.vocoder, batch_size=FLAGS.batch_size, bucket_frames=FLAGS.bucket_frames)
    start = time.perf_counter()
    wavs = vr.vocode_records(voc, recs, FLAGS.given_durations)
    seconds = time.perf_counter() - start
  except (FileNotFoundError, ValueError, KeyError) as e:
    sys.exit(f"error: {e}")
  vr.write_wavs(FLAGS.out_dir, [r["name"] for r in recs], wavs, voc.sample_rate)
  audio = sum(len(w) for w in wavs) / voc.sample_rate
  print(json.dumps({"clips": len(wavs), "out_dir": FLAGS.out_dir, "audio_seconds": round(audio, 2),
                    "wall_seconds": round(seconds, 2)}, indent=2))


if __name__ == "__main__":
  app.run(main)
