"""Speech metrics of a checkpoint on the benchmarks' own layouts (docs/reference.md §6), and GenPPL of ASR transcripts.

  python tools/evaluate.py --ckpt=CKPT --benchmark=swuggy --data_dir=zr2021/lexical/dev \
      [--units=units.jsonl | --encoder=HUBERT_DIR --kmeans=km500.npy] --out=results.json [--submission_dir=D]
  python tools/evaluate.py --ckpt=CKPT --benchmark=cm_tsc --data_dir=cross_tSC --cm_modes=tt,ts,st,ss --out=r.json
  python tools/evaluate.py --ckpt=LLAMA_1B_HF_DIR --benchmark=genppl --transcripts=asr.jsonl --out=genppl.json
  python tools/evaluate.py --benchmark=genppl --ckpt=SPEECH_LM --judge=LLAMA_1B_HF_DIR --data_dir=sSC \
      --vocoder=VOCODER_DIR --asr=WHISPER_DIR --genppl_dir=runs/genppl [--transcripts=F | --wav_dir=D | --continuations=F]

--ckpt is an Orbax checkpoint of ours or a Hugging Face / slamkit folder. Units come from --units (a slamkit
features JSONL keyed by file stem; `units.jsonl` / `features.jsonl` inside --data_dir is found by itself) or
from the audio through --encoder / --kmeans.
"""
import sys

from absl import app, flags

from slm_jax import assets, console
from slm_jax.eval import run
from slm_jax.eval.benchmarks import BENCHMARKS

FLAGS = flags.FLAGS
flags.DEFINE_string("ckpt", None, "Orbax checkpoint folder or HF folder (for genppl: the judge LM); asset:NAME is a "
                    "pinned one (slm_jax/assets.py, e.g. asset:smollm2), here and in --judge / --asr.", required=True)
flags.DEFINE_integer("step", None, "Orbax step (default: latest).")
flags.DEFINE_enum("benchmark", None, list(BENCHMARKS) + ["genppl"], "What to evaluate.", required=True)
flags.DEFINE_string("data_dir", None, "Benchmark folder (gold.csv folder, StoryCloze folder, speaker folders, ...).")
flags.DEFINE_string("split", "dev", "ZeroSpeech split when --data_dir holds dev/ and test/.")
flags.DEFINE_enum("layout", "auto", ["auto", "zerospeech", "named", "slamkit"], "File layout of --data_dir.")
flags.DEFINE_string("units", None, "slamkit features JSONL with the units of every audio file (keyed by stem).")
flags.DEFINE_string("encoder", None, "Audio input: a HF HubertModel folder (mhubert-base-25hz) or 'mfcc' (stand-in).")
flags.DEFINE_integer("layer", 11, "Audio input: HuBERT layer whose output is quantised (docs/reference.md §1: 11).")
flags.DEFINE_string("kmeans", None, "Audio input: k-means centroids (.npy, or a joblib pickle with --trust_pickle).")
flags.DEFINE_bool("trust_pickle", False, "Allow loading a pickled k-means model.")
flags.DEFINE_enum("reduce", "mean", ["mean", "sum"], "Per-sequence score: mean (slamkit default) or sum.")
flags.DEFINE_bool("mask_modality", False, "Ban text ids and markers when scoring speech (docs/reference.md §6 option).")
flags.DEFINE_list("cm_modes", None, "Cross-modal modes among tt,ts,st,ss (default: every mode with its files).")
flags.DEFINE_string("cm_text_join", " ", "Between prompt and ending text in T->T ('' is slamkit's join).")
flags.DEFINE_string("transcripts", None, "genppl: ASR transcripts, JSONL {file_name, text} or one per line.")
flags.DEFINE_string("judge", None, "genppl end to end: the judge text LM (HF Llama/Qwen folder or Orbax); --ckpt is "
                    "then the speech LM. Without it, --ckpt is the judge and --transcripts is required.")
flags.DEFINE_string("vocoder", None, "genppl: converted unit vocoder folder (tools/convert_vocoder.py).")
flags.DEFINE_string("asr", None, "genppl: Whisper folder (CTranslate2 for faster-whisper, or transformers).")
flags.DEFINE_string("continuations", None, "genppl: start from these continuation units (tools/generate.py JSONL).")
flags.DEFINE_string("wav_dir", None, "genppl: start from these wavs (skips generation and vocoding).")
flags.DEFINE_string("genppl_dir", "genppl_run", "genppl: folder for every stage's outputs.")
flags.DEFINE_integer("num_prompts", 1000, "genppl: first N 'correct' StoryCloze items as prompts.")
flags.DEFINE_float("prompt_seconds", 3.0, "genppl: prompts keep the units within the first N seconds.")
flags.DEFINE_integer("max_new_tokens", 150, "genppl: new units per prompt.")
flags.DEFINE_float("temperature", 0.8, "genppl: sampling temperature.")
flags.DEFINE_integer("top_k", 25, "genppl: top-k filter.")
flags.DEFINE_float("repetition_penalty", 1.0, "genppl: transformers-style repetition penalty (slamkit config: 1.0).")
flags.DEFINE_bool("vocode_prompt", True, "genppl: vocode prompt + continuation (slamkit) rather than the "
                  "continuation alone.")
flags.DEFINE_integer("seed", 0, "genppl: sampling seed.")
flags.DEFINE_string("out", None, "Full results JSON (default: eval_<benchmark>.json in the current folder); "
                    "a short table is printed.")
flags.DEFINE_string("submission_dir", None, "Also write ZeroSpeech submission files (<stem> <score>) here.")
flags.DEFINE_bool("by_pair", False, "Keep the per-pair (per-id) table in the results JSON.")
flags.DEFINE_string("dtype", None, "Compute dtype override (float32 / bfloat16).")
flags.DEFINE_integer("tokens_per_batch", 16384, "Tokens per scoring step (batch x bucket length).")
flags.DEFINE_integer("max_buckets", 4, "Length buckets (each compiles once).")
flags.DEFINE_integer("mesh_data", 1, "Mesh 'data' axis.")
flags.DEFINE_integer("mesh_tensor", 1, "Mesh 'tensor' axis ('fsdp' takes the remaining devices).")


def main(argv):
  del argv
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  mesh = run.make_mesh(FLAGS.mesh_data, -1, FLAGS.mesh_tensor)
  scorer_kw = dict(tokens_per_batch=FLAGS.tokens_per_batch, max_buckets=FLAGS.max_buckets)
  out = FLAGS.out or f"eval_{FLAGS.benchmark}.json"
  print(f"{FLAGS.benchmark}: loading {FLAGS.ckpt}", flush=True)
  try:
    ckpt = assets.resolve(FLAGS.ckpt)  # asset:NAME (slm_jax/assets.py, e.g. asset:smollm2) or a folder
    judge = assets.resolve(FLAGS.judge) if FLAGS.judge else None
    asr = assets.resolve(FLAGS.asr) if FLAGS.asr else None
    if FLAGS.benchmark == "genppl" and judge:
      from slm_jax.eval.generate import SamplingConfig
      from slm_jax.eval.genppl import genppl_pipeline
      sc = SamplingConfig(max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature, top_k=FLAGS.top_k,
                          repetition_penalty=FLAGS.repetition_penalty)
      res = genppl_pipeline(
          FLAGS.genppl_dir, judge, ckpt=ckpt, data_dir=FLAGS.data_dir, units=FLAGS.units,
          continuations=FLAGS.continuations, wav_dir=FLAGS.wav_dir, transcripts=FLAGS.transcripts,
          vocoder=FLAGS.vocoder, asr_model=asr, num_prompts=FLAGS.num_prompts,
          prompt_seconds=FLAGS.prompt_seconds, sampling=sc, vocode_prompt=FLAGS.vocode_prompt, seed=FLAGS.seed,
          mesh=mesh, dtype=FLAGS.dtype, **scorer_kw)
      run.write_json(out, res)
      summary = {k: res[k] for k in ("genppl", "mean_nll", "auto_bleu_2", "num_samples", "num_empty") if k in res}
    elif FLAGS.benchmark == "genppl":
      if not FLAGS.transcripts:
        raise ValueError("--benchmark=genppl needs --transcripts (or --judge for the whole pipeline)")
      res = run.genppl_checkpoint(ckpt, FLAGS.transcripts, mesh=mesh, dtype=FLAGS.dtype, out=out,
                                  **scorer_kw)
      summary = {k: res[k] for k in ("genppl", "mean_nll", "auto_bleu_2", "num_samples", "num_empty") if k in res}
    else:
      if not FLAGS.data_dir:
        raise ValueError(f"--benchmark={FLAGS.benchmark} needs --data_dir")
      res = run.evaluate_checkpoint(
          ckpt, FLAGS.benchmark, FLAGS.data_dir, step=FLAGS.step, dtype=FLAGS.dtype, mesh=mesh,
          units=FLAGS.units, encoder=FLAGS.encoder, kmeans=FLAGS.kmeans, trust_pickle=FLAGS.trust_pickle,
          layer=FLAGS.layer,
          out=out, split=FLAGS.split, layout=FLAGS.layout, reduce=FLAGS.reduce,
          mask_modality=FLAGS.mask_modality, cm_modes=FLAGS.cm_modes, cm_text_join=FLAGS.cm_text_join,
          submission_dir=FLAGS.submission_dir, by_pair=FLAGS.by_pair, **scorer_kw)
      summary = {k: res[k] for k in ("metric", "accuracy", "num_pairs", "breakdowns")}
  except (FileNotFoundError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  print(table(summary))
  print(f"full results: {out}")


def table(summary: dict) -> str:
  """A few lines: the metric, its accuracy and pairs, one line per breakdown (or the GenPPL figures)."""
  if "genppl" in summary:
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())
  lines = [f"{summary['metric']}: {100 * summary['accuracy']:.1f}% accuracy on {summary['num_pairs']} pairs"]
  for key, parts in summary.get("breakdowns", {}).items():
    if not isinstance(parts, dict):  # e.g. a per-voice average
      lines.append(f"  {key}: {parts:.4g}" if isinstance(parts, float) else f"  {key}: {parts}")
      continue
    cells = [f"{k} {100 * v['score']:.1f}" for k, v in parts.items()
             if isinstance(v, dict) and v.get("score") is not None]
    if cells:
      lines.append(f"  {key}: " + ", ".join(cells))
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
