"""Orbax checkpoint of ours -> Hugging Face folder (safetensors shards <= 5 GB, config, tokenizer).

  python tools/convert_orbax_to_hf.py --ckpt_dir=ckpt/llama3b_units --out_dir=hf_out [--step=N] \
      [--dtype=bfloat16|float32]
The result loads with transformers.AutoModelForCausalLM / AutoTokenizer.from_pretrained(out_dir).
"""
import sys

from absl import app, flags

from slm_jax import console
from slm_jax.checkpoint.host_memory import limit_malloc_arenas
from slm_jax.checkpoint.hf_export import convert_orbax_to_hf
from slm_jax.checkpoint.hf_to_orbax import DTYPES

FLAGS = flags.FLAGS
flags.DEFINE_string("ckpt_dir", None, "Orbax checkpoint folder (conversion or training checkpoint).", required=True)
flags.DEFINE_string("out_dir", None, "HF folder to create.", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_enum("dtype", "bfloat16", DTYPES, "dtype of the written tensors (never fp16).")
flags.DEFINE_string("tokenizer_dir", None, "Tokenizer folder when the checkpoint carries none.")
flags.DEFINE_bool("overwrite", False, "Replace --out_dir if it exists.")


def main(argv):
  del argv
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  limit_malloc_arenas()
  try:
    convert_orbax_to_hf(FLAGS.ckpt_dir, FLAGS.out_dir, step=FLAGS.step, dtype=FLAGS.dtype,
                        tokenizer_dir=FLAGS.tokenizer_dir, overwrite=FLAGS.overwrite)
  except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
