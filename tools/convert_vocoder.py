"""Unit HiFi-GAN checkpoint (torch) -> our vocoder folder (vocoder.json + params.npz, weight norm folded).

  # textlesslib / slamkit (vocoder_hubert_25: hifigan_lj_mhubert_base_25hz.pt + its _config.json)
  python tools/convert_vocoder.py --format=textless --checkpoint=hifigan_lj_mhubert_base_25hz.pt \
      --config=hifigan_lj_mhubert_base_25hz_config.json --out_dir=vocoders/mhubert25
  # speechbrain UnitHifiganGenerator: its state dict + a JSON of its constructor keyword arguments
  python tools/convert_vocoder.py --format=speechbrain --checkpoint=generator.ckpt --config=kwargs.json --out_dir=D

torch is needed only here (torch.load with weights_only=True).
"""
import sys

from absl import app, flags

from slm_jax import console
from slm_jax.vocoder import convert

FLAGS = flags.FLAGS
flags.DEFINE_enum("format", None, ["textless", "speechbrain"], "Checkpoint layout.", required=True)
flags.DEFINE_string("checkpoint", None, "textless: .pt with a 'generator' state dict; speechbrain: a state dict.",
                    required=True)
flags.DEFINE_string("config", None, "textless: the hifigan _config.json; speechbrain: JSON of the generator's "
                    "keyword arguments.", required=True)
flags.DEFINE_string("out_dir", None, "Vocoder folder to write.", required=True)


def main(argv):
  del argv
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  try:
    cfg = convert.convert(FLAGS.format, FLAGS.checkpoint, FLAGS.config, FLAGS.out_dir)
  except (FileNotFoundError, ValueError, KeyError) as e:
    sys.exit(f"error: {e}")
  print(f"wrote {FLAGS.out_dir}: {cfg.source_format} vocoder, {cfg.num_embeddings} units, hop {cfg.hop_length}, "
        f"duration predictor: {cfg.dur_predictor}")


if __name__ == "__main__":
  app.run(main)
