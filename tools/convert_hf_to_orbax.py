"""Hugging Face (or slamkit) checkpoint -> Orbax checkpoint with the docs/reference.md §2 speech-text vocabulary.

  python tools/convert_hf_to_orbax.py --hf_dir=Llama-3.2-3B --out_dir=ckpt/llama3b_units \
      [--add_speech_units=500] [--dtype=bfloat16|float32] [--tokenizer_dir=D]
"""
import sys

from absl import app, flags

from slm_jax import assets, console
from slm_jax.checkpoint.host_memory import limit_malloc_arenas
from slm_jax.checkpoint.hf_to_orbax import DTYPES, convert_hf_to_orbax

FLAGS = flags.FLAGS
flags.DEFINE_string("hf_dir", None, "HF folder: config.json + model.safetensors (or a sharded index); "
                    "a slamkit checkpoint folder is accepted too; asset:NAME is a pinned one (slm_jax/assets.py, "
                    "e.g. asset:smollm2).", required=True)
flags.DEFINE_string("out_dir", None, "Orbax checkpoint folder to create.", required=True)
flags.DEFINE_integer("add_speech_units", 500, "Unit tokens <Un0>..<Un{n-1}> (plus <speech>, <text>) to add; 0 adds "
                     "none. A slamkit checkpoint needs its own count (500).")
flags.DEFINE_enum("dtype", "bfloat16", DTYPES, "Parameter dtype of the checkpoint.")
flags.DEFINE_string("tokenizer_dir", None, "Tokenizer folder when --hf_dir has none (slamkit checkpoints: the "
                    "base model's tokenizer).")
flags.DEFINE_integer("seed", 0, "Seed of the noise on new embedding rows.")
flags.DEFINE_bool("overwrite", False, "Replace --out_dir if it exists.")


def main(argv):
  del argv
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  limit_malloc_arenas()
  try:
    tokenizer_dir = assets.resolve(FLAGS.tokenizer_dir) if FLAGS.tokenizer_dir else None
    convert_hf_to_orbax(assets.resolve(FLAGS.hf_dir), FLAGS.out_dir, num_units=FLAGS.add_speech_units,
                        dtype=FLAGS.dtype, tokenizer_dir=tokenizer_dir, seed=FLAGS.seed, overwrite=FLAGS.overwrite)
  except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
