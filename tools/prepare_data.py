"""slamkit-format data -> a prepared dataset folder (TFDS ArrayRecord shards + manifest.json), docs/reference.md §3.

  tools/prepare_data.py --kind=interleaved --input='feats/*.jsonl' --alignment_dir=meta --out_dir=data/inter
  tools/prepare_data.py --kind=speech --input=feats/train.jsonl --out_dir=data/speech
  tools/prepare_data.py --kind=text --input='text/*.jsonl,books/*.txt' --out_dir=data/text
  tools/prepare_data.py --kind=preference --input=pairs_features.jsonl --out_dir=data/preference

Inputs: slamkit features JSONL (units, duration, file_name; interleaved also needs `<stem>.json` alignments with
`aligned_text`, in --alignment_dir or next to the audio), slamkit tokens JSONL (file_name, audio_repr), or text
(JSONL with --text_field, or .txt files, one document each). Rejected documents are listed in manifest.json with
their file, line and reason; --strict stops at the first one. The folder opens with grain (slm_jax.data.pipeline)
and with `tfds.builder_from_directory(out_dir).as_data_source(split)`.
"""
import sys

from absl import app, flags

from slm_jax import console
from slm_jax.frames import FRAME_S

_KIND = flags.DEFINE_enum("kind", None, ["interleaved", "speech", "text", "preference"],
                          "Kind of documents to make (preference: slamkit's spoken preference pairs, for DPO).")
_INPUT = flags.DEFINE_list("input", None, "Input files: comma-separated globs (** allowed).")
_OUT = flags.DEFINE_string("out_dir", None, "Output folder.")
_ALIGN = flags.DEFINE_string("alignment_dir", None, "Folder of <stem>.json alignments (default: next to the audio).")
_STRICT = flags.DEFINE_bool("strict", False, "Fail at the first rejected document.")
_VAL_FRACTION = flags.DEFINE_float("validation_fraction", 0.01,
                                   "Fraction of documents for validation (chosen by a hash of the document id).")
_VAL_COUNT = flags.DEFINE_integer("validation_count", None, "Instead: the first N accepted documents.")
_SHARD = flags.DEFINE_integer("records_per_shard", 100_000, "Documents per ArrayRecord shard.")
_WORKERS = flags.DEFINE_integer("num_workers", None, "Worker processes (default: all cores).")
_TEXT_FIELD = flags.DEFINE_string("text_field", "text", "Text field of text JSONL lines.")
_NUM_UNITS = flags.DEFINE_integer("num_units", 500, "Unit vocabulary size (ids must lie in 0..num_units-1).")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "HF tokenizer folder to count text tokens in the manifest.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a prepared dataset already in --out_dir.")
_TOLERANCE = flags.DEFINE_float("time_tolerance", FRAME_S, "Seconds a word may end past the end of the audio.")
_REPETITION = flags.DEFINE_bool("repetition_filter", True, "Preference pairs with prompt_text and chosen_text: drop "
                                "them unless auto-BLEU-2 of prompt + chosen text < --max_auto_bleu (slamkit).")
_MAX_BLEU = flags.DEFINE_float("max_auto_bleu", 0.3, "Threshold of the preference repetition filter.")
_ALLOW_EMPTY = flags.DEFINE_bool("allow_empty", False, "Accept empty input files and write a dataset without "
                                 "documents (otherwise an error).")
flags.mark_flags_as_required(["kind", "input", "out_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  from slm_jax.data import prepare, slamkit
  if _KIND.value == "preference":
    from slm_jax.data import preference
    try:
      preference.prepare(_INPUT.value, _OUT.value, num_units=_NUM_UNITS.value, strict=_STRICT.value,
                         validation_fraction=_VAL_FRACTION.value, validation_count=_VAL_COUNT.value,
                         records_per_shard=_SHARD.value, repetition_filter=_REPETITION.value,
                         max_auto_bleu=_MAX_BLEU.value, overwrite=_OVERWRITE.value)
    except (slamkit.Rejected, prepare.InputError, FileNotFoundError, FileExistsError) as e:
      print(f"ERROR: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
    return
  cfg = prepare.PrepareConfig(
      kind=_KIND.value, inputs=_INPUT.value, out_dir=_OUT.value, alignment_dir=_ALIGN.value, strict=_STRICT.value,
      validation_fraction=_VAL_FRACTION.value, validation_count=_VAL_COUNT.value, records_per_shard=_SHARD.value,
      num_workers=_WORKERS.value, text_field=_TEXT_FIELD.value, num_units=_NUM_UNITS.value,
      tokenizer_dir=_TOKENIZER.value, overwrite=_OVERWRITE.value, time_tolerance=_TOLERANCE.value,
      allow_empty=_ALLOW_EMPTY.value)
  try:
    prepare.prepare(cfg)
  except (slamkit.Rejected, prepare.InputError, FileNotFoundError, FileExistsError) as e:
    print(f"ERROR: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
