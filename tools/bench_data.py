"""Input-pipeline throughput: ArrayRecord shards -> interleave -> tokenise -> mix -> pack -> global batches.

  PYTHONPATH=. .venv/bin/python tools/bench_data.py --workers=0,2 --seconds=20

Builds (once, in --work_dir) a synthetic corpus shaped like SIMS data: utterances of 5-30 s with ~17.5
deduplicated units per second and word alignments, prepared as interleaved and speech documents, plus text
documents (50-550 words, so that the SIMS per-document weights give about equal tokens per kind). Then, for each
worker count, it times the training iterator (SIMS weights, per-epoch interleaving, real Llama-3 tokenizer) for
--seconds after a warm-up, making global jax.Arrays of every batch on the local devices.
Reports tokens/s (wall), CPU seconds used by the main process and its workers, tokens per CPU-second (the per-core
figure) and the cores needed for --target tokens/s per host (a host feeding 8 A100s at Llama-3.2-3B, 50% MFU, needs
~65k tokens/s; the target is ten times that), and the shared-memory segments still open after the iterator closed
(shm_open_after_close: 0 expected).
"""
import gc
import json
import math
import os
import time

from absl import app, flags

_WORK = flags.DEFINE_string("work_dir", "/tmp/slm_jax_bench_data", "Corpus and prepared datasets (made once).")
_TOKENIZER = flags.DEFINE_string("tokenizer", "asset:llama3",
                                 "HF tokenizer folder, or asset:llama3 (slm_jax.assets' Llama-3 tokenizer).")
_UTTS = flags.DEFINE_integer("num_utterances", 3000, "Synthetic utterances (5-30 s).")
_TEXTS = flags.DEFINE_integer("num_text", 900, "Synthetic text documents.")
_SEQ = flags.DEFINE_integer("seq_len", 2048, "Context length.")
_BATCH = flags.DEFINE_integer("global_batch_size", 32, "Rows per batch (one host).")
_WORKERS = flags.DEFINE_list("workers", ["0"], "Worker-process counts to time.")
_SECONDS = flags.DEFINE_float("seconds", 15.0, "Timed seconds per worker count (after the warm-up).")
_WARMUP = flags.DEFINE_integer("warmup_batches", 4, "Batches before timing starts.")
_GLOBAL = flags.DEFINE_bool("global_arrays", True, "Also make global jax.Arrays of each batch (local devices).")
_TARGET = flags.DEFINE_float("target", 650_000, "Tokens/s per host to reach.")
_PREPARE_ONLY = flags.DEFINE_bool("prepare_only", False, "Only build the prepared datasets.")


def _cpu_seconds() -> float:
  try:
    import psutil
  except ImportError:
    return float("nan")
  me = psutil.Process()
  total = sum(me.cpu_times()[:2])
  for child in me.children(recursive=True):
    try:
      total += sum(child.cpu_times()[:2])
    except psutil.Error:
      pass
  return total


def _prepare(work: str) -> dict[str, str]:
  from slm_jax.data import prepare, records
  from slm_jax.testing import synthetic_data as synthetic
  sources = {k: os.path.join(work, k) for k in records.KINDS}
  if all(os.path.exists(os.path.join(d, "manifest.json")) for d in sources.values()):
    return sources
  t = time.time()
  paths = synthetic.write_corpus(os.path.join(work, "input"), num_utterances=_UTTS.value, num_text=_TEXTS.value,
                                 seed=0, seconds=(5.0, 30.0), text_words=(50, 550))
  print(f"corpus written in {time.time() - t:.1f} s", flush=True)
  for kind, inp in (("interleaved", paths["features"]), ("speech", paths["features"]), ("text", paths["text"])):
    t = time.time()
    m = prepare.prepare(prepare.PrepareConfig(kind=kind, inputs=[inp], out_dir=sources[kind], overwrite=True,
                                              alignment_dir=paths["alignment_dir"], validation_fraction=0.01),
                        progress=False)
    dt = time.time() - t
    print(json.dumps({"prepare": kind, "documents": m["counts"]["documents"], "seconds": round(dt, 2),
                      "docs_per_s": round(m["counts"]["documents"] / dt)}), flush=True)
  return sources


def _time(sources, tok, layout, workers: int, mesh) -> dict:
  from slm_jax.data import pipeline
  from slm_jax.train.data import global_batch
  it = pipeline.make_iterator(sources, pipeline.SIMS_MIX_WEIGHTS, tok, layout, split="train", seq_len=_SEQ.value,
                              global_batch_size=_BATCH.value, seed=0, num_workers=workers, process_index=0,
                              process_count=1)
  t0 = time.time()
  for _ in range(_WARMUP.value):
    next(it)
  warm = time.time() - t0
  tokens = batches = 0
  batch = arrays = None
  kinds = {"text": 0, "unit": 0, "marker": 0}
  t, c = time.time(), _cpu_seconds()
  while time.time() - t < _SECONDS.value:
    batch = next(it)
    if mesh is not None:
      arrays = global_batch(batch, mesh)
      arrays["input_ids"].block_until_ready()
    tokens += int((batch["segment_ids"] > 0).sum())
    for k, v in pipeline.count_tokens(batch).items():
      kinds[k] += v
    batches += 1
  wall, cpu = time.time() - t, _cpu_seconds() - c
  if hasattr(it, "close"):
    it.close()
  del it, batch, arrays
  shm_open = _release_shared_memory()
  labels = sum(kinds.values())
  per_core = tokens / cpu if cpu == cpu and cpu > 0 else float("nan")
  return {"workers": workers, "batches": batches, "tokens": tokens, "wall_s": round(wall, 2),
          "tokens_per_s": round(tokens / wall), "label_tokens_per_s": round(labels / wall),
          "cpu_s": round(cpu, 2), "tokens_per_cpu_s": round(per_core) if per_core == per_core else None,
          "cores_for_target": math.ceil(_TARGET.value / per_core) if per_core == per_core else None,
          "fill": round(tokens / (batches * _BATCH.value * _SEQ.value), 4),
          "label_share": {k: round(v / max(labels, 1), 3) for k, v in kinds.items()}, "warmup_s": round(warm, 2),
          "shm_open_after_close": shm_open}


def _release_shared_memory(timeout_s: float = 10.0) -> int:
  """Frees the last batches' shared memory; returns the segments still open (0 expected; -1: cannot tell).

  With workers, batches arrive in grain's shared memory, and XLA:CPU aliases such page-aligned arrays instead of
  copying them; jax lets go of them only after the buffers are freed (asynchronously) and then in a gc callback.
  Without collecting here the last batches' segments stay open until exit, and the resource tracker reports them
  as leaked `shared_memory` objects."""
  deadline = time.time() + timeout_s
  while True:
    gc.collect()  # runs jax's callback, which drops the references of freed buffers
    n = _shm_mapped()
    if n <= 0 or time.time() > deadline:
      return n
    time.sleep(0.05)


def _shm_mapped() -> int:
  """Shared-memory segments (multiprocessing.shared_memory, /dev/shm/psm_*) this process still maps."""
  try:
    with open("/proc/self/maps") as f:
      return len({line.split()[-1] for line in f if "/dev/shm/psm_" in line})
  except OSError:  # no procfs
    return -1


def main(argv):
  del argv
  from slm_jax import console
  console.setup()  # what every tool does first
  sources = _prepare(_WORK.value)
  if _PREPARE_ONLY.value:
    return
  import dataclasses
  import jax
  from transformers import AutoTokenizer
  from slm_jax import assets, vocab
  from slm_jax.sharding import make_mesh
  tok = AutoTokenizer.from_pretrained(assets.resolve(_TOKENIZER.value))
  layout = vocab.extend_tokenizer(tok)
  if layout.bos_id is None and layout.base_size == 128256:
    layout = dataclasses.replace(layout, bos_id=128000)  # Llama-3.2 prepends <|begin_of_text|>
  mesh = make_mesh(devices=jax.local_devices()) if _GLOBAL.value else None
  print(json.dumps({"cpu_count": os.cpu_count(), "seq_len": _SEQ.value, "rows": _BATCH.value,
                    "devices": [str(d) for d in jax.local_devices()][:2]}), flush=True)
  for w in _WORKERS.value:
    print(json.dumps(_time(sources, tok, layout, int(w), mesh)), flush=True)


if __name__ == "__main__":
  app.run(main)
