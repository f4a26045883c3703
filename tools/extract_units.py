"""Audio folder -> deduplicated speech units, slamkit features JSONL (docs/reference.md §1, §3).

  python tools/extract_units.py --audio_dir=D [--ext=flac] --out=units.jsonl \
      [--encoder=HF_HUBERT_DIR|mfcc] [--layer=11] [--kmeans=km.npy] [--fit_kmeans=K] [--slamkit_padding]
  python tools/extract_units.py --convert_kmeans=km500.bin --kmeans_out=km500.npy --trust_pickled_kmeans

Reruns skip files already in the output. --prepare_dir also writes the ArrayRecord form the data tools read. On several hosts pass --distributed: each process takes every n-th file
and writes `<out>-<i>-of-<n>.jsonl`. `--encoder=mfcc` is a weight-free STAND-IN (MFCC k-means), not HuBERT.
"""
import sys

from absl import app, flags

from slm_jax import assets, console

_AUDIO = flags.DEFINE_string("audio_dir", None, "Folder searched recursively for audio (asset:librivox: 5 pinned "
                             "LibriVox wavs, slm_jax/assets.py).")
_EXT = flags.DEFINE_string("ext", "flac", "Audio extension(s), comma-separated (flac,wav,...).")
_OUT = flags.DEFINE_string("out", None, "Output features JSONL (appended to; done files skipped).")
_ENCODER = flags.DEFINE_string("encoder", "mfcc", "HF HubertModel folder (e.g. slprl/mhubert-base-25hz "
                               "downloaded) or 'mfcc' for the weight-free stand-in.")
_LAYER = flags.DEFINE_integer("layer", 11, "HF hidden_states index to quantise (docs/reference.md §1: 11).")
_KMEANS = flags.DEFINE_string("kmeans", None, "Centroids .npy (or a joblib pickle with --trust_pickled_kmeans); "
                              "with --fit_kmeans, where the fitted centroids are written.")
_FIT = flags.DEFINE_integer("fit_kmeans", 0, "Fit K centroids on this audio first (stand-in / new codebooks).")
_FIT_FRAMES = flags.DEFINE_integer("fit_max_frames", 200_000, "Frames sampled for --fit_kmeans.")
_TRUST = flags.DEFINE_bool("trust_pickled_kmeans", False, "Allow loading a joblib/pickle k-means: this RUNS CODE "
                           "from the file. Only for files you trust; convert once with --convert_kmeans.")
_CONVERT = flags.DEFINE_string("convert_kmeans", None, "Convert this joblib k-means to --kmeans_out (.npy), exit.")
_KM_OUT = flags.DEFINE_string("kmeans_out", None, "Destination of --convert_kmeans.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Clips per batch (rounded up to a multiple of local devices).")
_MAX_SEC = flags.DEFINE_float("max_batch_seconds", 600.0, "Cap on padded audio seconds per batch.")
_SLAMKIT = flags.DEFINE_bool("slamkit_padding", False, "Reproduce slamkit: pad batches to the longest clip with "
                             "no mask (a clip's last units then depend on its batch mates). Default: masked.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Encoder compute dtype.")
_STRICT = flags.DEFINE_bool("strict", False, "Fail on unreadable or empty audio instead of skipping it.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for --fit_kmeans.")
_PREP = flags.DEFINE_string("prepare_dir", None, "Also write the prepared form (ArrayRecord, tools/prepare_data.py) "
                            "of the output here (single process; on many hosts run prepare_data on the shards).")
_PREP_KIND = flags.DEFINE_enum("prepare_kind", "speech", ["speech", "interleaved"], "Documents for --prepare_dir.")
_ALIGN = flags.DEFINE_string("alignment_dir", None, "Alignments (<stem>.json) for --prepare_kind=interleaved.")
_DIST = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host) and take this "
                          "process's share of the files.")


def main(argv):
  del argv
  console.setup()  # absl / Orbax / JAX INFO hidden unless --verbosity is given
  from slm_jax.units import extract, kmeans
  if _CONVERT.value:
    if not _KM_OUT.value:
      raise app.UsageError("--convert_kmeans needs --kmeans_out=FILE.npy")
    c = kmeans.convert_to_npy(_CONVERT.value, _KM_OUT.value, trust_pickle=_TRUST.value)
    print(f"wrote {_KM_OUT.value}: {c.shape[0]} centroids of dimension {c.shape[1]}")
    return
  if not _AUDIO.value or not _OUT.value:
    raise app.UsageError("--audio_dir and --out are required")
  import jax
  if _DIST.value:
    jax.distributed.initialize()
  cfg = extract.RunConfig(
      audio_dir=assets.resolve(_AUDIO.value), out=_OUT.value, ext=_EXT.value, encoder=_ENCODER.value,
      layer=_LAYER.value,
      kmeans=_KMEANS.value, fit_kmeans=_FIT.value, fit_max_frames=_FIT_FRAMES.value,
      trust_pickled_kmeans=_TRUST.value, batch_size=_BATCH.value, max_batch_seconds=_MAX_SEC.value,
      slamkit_padding=_SLAMKIT.value, dtype=_DTYPE.value, strict=_STRICT.value, seed=_SEED.value,
      process_index=jax.process_index(), process_count=jax.process_count())
  from slm_jax.units import audio
  try:
    stats = extract.run(cfg)
  except (audio.AudioError, FileNotFoundError, FileExistsError, ValueError) as e:
    print(f"ERROR: {e}{' (--strict)' if isinstance(e, audio.AudioError) else ''}", file=sys.stderr, flush=True)
    sys.exit(2)
  print(extract.summary(stats, extract.shard_path(cfg.out, cfg.process_index, cfg.process_count)))
  if _PREP.value:
    if cfg.process_count > 1:
      raise app.UsageError("--prepare_dir runs in a single process; run tools/prepare_data.py on the shards")
    from slm_jax.data import prepare
    manifest = prepare.prepare(prepare.PrepareConfig(kind=_PREP_KIND.value, inputs=[cfg.out], out_dir=_PREP.value,
                                                     alignment_dir=_ALIGN.value, overwrite=True, strict=cfg.strict))
    print(prepare.summary(manifest))


if __name__ == "__main__":
  app.run(main)
