"""Speech / text / cross-modal continuations with KV-cache sampling (docs/reference.md §6).

  python tools/generate.py --ckpt=CKPT --prompts=prompts_features.jsonl --out=continuations.jsonl
  python tools/generate.py --ckpt=CKPT --audio_dir=wavs --encoder=HUBERT_DIR --kmeans=km500.npy --out=c.jsonl
      [--prompt_modality=speech] [--output_modality=speech|text] [--prompt_seconds=3]
      [--temperature=0.8 --top_k=25 --top_p=1.0 | --greedy] [--max_new_tokens=150] [--allow_eos]

Speech prompts are slamkit features JSONL (units + duration); speech output is features JSONL too (ready for a
unit vocoder; durations 1), text output is JSONL {file_name, prompt, text}. Text prompts: one per line, or JSONL
with `text`. The other modality's ids (and both markers) are banned so the output stays in one modality.
With --vocoder (speech output), a <file_name>.wav is written beside --out for each continuation.
"""
import json
import os
import sys

from absl import app, flags

from slm_jax import console
from slm_jax.eval import run
from slm_jax.eval.generate import SamplingConfig
from slm_jax.eval.loading import load_checkpoint

FLAGS = flags.FLAGS
flags.DEFINE_string("ckpt", None, "Orbax checkpoint folder or HF folder.", required=True)
flags.DEFINE_integer("step", None, "Orbax step (default: latest).")
flags.DEFINE_string("prompts", None, "Prompts file (see above).")
flags.DEFINE_string("audio_dir", None, "Speech prompts from audio files instead (needs --encoder and --kmeans).")
flags.DEFINE_string("encoder", None, "Audio prompts: a HF HubertModel folder or 'mfcc' (stand-in).")
flags.DEFINE_string("kmeans", None, "Audio prompts: k-means centroids (.npy, or a pickle with --trust_pickle).")
flags.DEFINE_bool("trust_pickle", False, "Allow loading a pickled k-means model.")
flags.DEFINE_integer("layer", 11, "Audio prompts: HuBERT layer whose output is quantised.")
flags.DEFINE_enum("prompt_modality", "speech", ["speech", "text"], "Modality of the prompts.")
flags.DEFINE_enum("output_modality", None, ["speech", "text"], "Modality of the output (default: the prompt's).")
flags.DEFINE_float("prompt_seconds", 3.0, "Speech prompts keep the units ending within this many seconds "
                   "(needs durations; <= 0 keeps all).")
flags.DEFINE_integer("max_prompts", None, "Use the first N prompts.")
flags.DEFINE_integer("max_new_tokens", 150, "New tokens per prompt.")
flags.DEFINE_bool("greedy", False, "Greedy decoding instead of sampling.")
flags.DEFINE_float("temperature", 0.8, "Sampling temperature.")
flags.DEFINE_integer("top_k", 25, "Top-k filter (0: off).")
flags.DEFINE_float("top_p", 1.0, "Nucleus filter (1: off).")
flags.DEFINE_float("repetition_penalty", 1.0, "transformers-style repetition penalty (slamkit's GenPPL: 1.1).")
flags.DEFINE_bool("allow_eos", False, "Let the base tokenizer's EOS stop a row (it is banned otherwise).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_integer("batch_size", 32, "Prompts per compiled call.")
flags.DEFINE_string("dtype", None, "Compute dtype override.")
flags.DEFINE_string("out", None, "Output JSONL.", required=True)
flags.DEFINE_string("vocoder", None, "Speech output: a converted unit vocoder folder (tools/convert_vocoder.py); "
                    "writes <file_name>.wav beside --out for each continuation.")
flags.DEFINE_bool("vocode_prompt", False, "With --vocoder: vocode the prompt's units before the continuation.")
flags.DEFINE_integer("mesh_data", 1, "Mesh 'data' axis.")
flags.DEFINE_integer("mesh_tensor", 1, "Mesh 'tensor' axis ('fsdp' takes the remaining devices).")


def main(argv):
  del argv
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  mesh = run.make_mesh(FLAGS.mesh_data, -1, FLAGS.mesh_tensor)
  try:
    seconds = FLAGS.prompt_seconds if FLAGS.prompt_seconds > 0 else None
    if FLAGS.audio_dir:
      if FLAGS.prompt_modality != "speech":
        raise ValueError("--audio_dir prompts are speech: use --prompt_modality=speech")
      source = run.make_audio_units(FLAGS.encoder, FLAGS.kmeans, trust_pickle=FLAGS.trust_pickle, layer=FLAGS.layer)
      prompts = run.read_audio_prompts(FLAGS.audio_dir, source, seconds)[:FLAGS.max_prompts]
    elif FLAGS.prompts:
      prompts = run.read_prompts(FLAGS.prompts, FLAGS.prompt_modality)[:FLAGS.max_prompts]
    else:
      raise ValueError("give --prompts or --audio_dir")
    loaded = load_checkpoint(FLAGS.ckpt, mesh, step=FLAGS.step, dtype=FLAGS.dtype)
    sc = SamplingConfig(max_new_tokens=FLAGS.max_new_tokens, greedy=FLAGS.greedy, temperature=FLAGS.temperature,
                        top_k=FLAGS.top_k, top_p=FLAGS.top_p, repetition_penalty=FLAGS.repetition_penalty)
    records, stats = run.generate_loaded(
        loaded, mesh, prompts, prompt_modality=FLAGS.prompt_modality, output_modality=FLAGS.output_modality,
        sampling=sc, prompt_seconds=seconds,
        allow_eos=FLAGS.allow_eos, seed=FLAGS.seed, batch_size=FLAGS.batch_size)
    if FLAGS.vocoder:
      if (FLAGS.output_modality or FLAGS.prompt_modality) != "speech":
        raise ValueError("--vocoder needs speech output (--output_modality=speech)")
      from slm_jax.vocoder import Vocoder, records as vr
      vr.vocode_continuations(Vocoder.load(FLAGS.vocoder), records, os.path.dirname(os.path.abspath(FLAGS.out)),
                              with_prompt=FLAGS.vocode_prompt)
  except (FileNotFoundError, ValueError, KeyError) as e:
    sys.exit(f"error: {e}")
  run.write_jsonl(FLAGS.out, records)
  print(json.dumps({"prompts": len(records), "out": FLAGS.out, **stats}, indent=2))


if __name__ == "__main__":
  app.run(main)
