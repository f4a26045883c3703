"""HF (or slamkit) safetensors folder -> our Orbax checkpoint with the docs/reference.md §2 speech-text vocabulary.

Tensors stream one at a time into the sharded model (no torch model is built); the embedding (and an untied
head) grows to the extended vocabulary as transformers' mean resizing does and is padded to a multiple of
`vocab_pad_multiple`. The checkpoint's metadata records model config, vocabulary layout and dtype; the extended
tokenizer is saved in `<out>/tokenizer`.
"""
from __future__ import annotations

import os
from typing import Callable

from jax.sharding import Mesh

from slm_jax import console, sharding
from slm_jax.checkpoint import orbax_io
from slm_jax.checkpoint.hf_import import ShapeMismatch, load_params
from slm_jax.checkpoint.hf_source import EMBED, HEAD, HFSource, open_hf
from slm_jax.checkpoint.staging import check_output, staged_output
from slm_jax.checkpoint.vocab_resize import grow_rows
from slm_jax.checkpoint.weight_map import flat_params, hf_names
from slm_jax.model.config import ModelConfig
from slm_jax.model.create import abstract_model
from slm_jax.vocab import VocabLayout, extend_tokenizer

DTYPES = ("bfloat16", "float32")
_IGNORED = ("rotary_emb.inv_freq",)


class VocabMismatch(ValueError):
  pass


def load_tokenizer(hf_dir: str, src: HFSource, tokenizer_dir: str | None):
  from transformers import AutoTokenizer
  if tokenizer_dir:
    if not os.path.isdir(tokenizer_dir):
      raise FileNotFoundError(f"tokenizer folder {tokenizer_dir} does not exist")
    return AutoTokenizer.from_pretrained(tokenizer_dir)
  if not src.has_tokenizer():
    hint = " (slamkit saves none: give the base model's, e.g. Llama-3.2's)" if src.kind == "slamkit" else ""
    raise FileNotFoundError(f"no tokenizer files in {hf_dir}; pass --tokenizer_dir{hint}")
  return AutoTokenizer.from_pretrained(hf_dir)


def plan_vocab(src: HFSource, tokenizer, num_units: int) -> tuple[VocabLayout, int]:
  """(layout, logical vocab size of the model). Extends `tokenizer` in place."""
  rows = src.embedding_rows()
  base_len = len(tokenizer)
  if num_units:
    layout = extend_tokenizer(tokenizer, num_units)
  elif src.kind == "slamkit":
    raise VocabMismatch(f"{src.folder} is a slamkit checkpoint (units already added): --add_speech_units must "
                        "be its unit count (500), not 0")
  else:
    layout = VocabLayout(base_size=base_len, num_units=0, bos_id=tokenizer.bos_token_id,
                         eos_id=tokenizer.eos_token_id)
  if src.kind == "slamkit":
    if not (rows == layout.size == (src.vocab_size or rows)):
      raise VocabMismatch(
          f"{src.folder}: slamkit config vocab_size {src.vocab_size} and embedding rows {rows} do not match the "
          f"extended tokenizer ({layout.size} = {layout.base_size} base + {layout.num_units} units + 2 markers); "
          "is --tokenizer_dir the base model's tokenizer?")
  elif layout.base_size > rows:
    raise VocabMismatch(f"{src.folder}: the tokenizer has {layout.base_size} tokens but {src.prefix}{EMBED} "
                        f"has only {rows} rows: tokenizer and weights do not belong together")
  return layout, max(layout.size, rows)


def _expected_hf_shapes(cfg: ModelConfig) -> dict[str, tuple[tuple, bool]]:
  """{HF name: (shape with the vocabulary dimension as None, transposed?)}."""
  out = {}
  for name, t in hf_names(abstract_model(cfg)).items():
    shape = t.shape
    if name in (EMBED, HEAD):
      shape = (None,) + shape[1:]
    out[name] = (shape, t.transpose)
  return out


def check_tensors(src: HFSource, cfg: ModelConfig) -> int:
  """Every expected tensor present with the right shape and no unexpected ones; one error lists them all.
  Returns the number of tensors the model reads."""
  expected = _expected_hf_shapes(cfg)
  problems = []
  for name, (shape, _) in expected.items():
    if not src.has(name):
      if name == EMBED and cfg.tie_word_embeddings and src.has(HEAD):
        continue
      if name == HEAD:
        problems.append(f"  {src.prefix}{HEAD}: missing, but config.json says tie_word_embeddings=false")
      else:
        problems.append(f"  {src.prefix}{name}: missing")
      continue
    got = src.shape(name)
    if len(got) != len(shape) or any(e is not None and g != e for g, e in zip(got, shape)):
      want = tuple("V" if e is None else e for e in shape)
      problems.append(f"  {src.prefix}{name}: shape {got} in the checkpoint, config.json implies {want}")
  extra = [n for n in src.reader.names() if n[len(src.prefix):] not in expected and not n.endswith(_IGNORED)
           and not (n == src.prefix + HEAD and cfg.tie_word_embeddings)]
  problems += [f"  {n}: not a parameter of the {cfg.arch} model described by config.json" for n in sorted(extra)]
  if problems:
    raise ShapeMismatch(f"{src.folder}: checkpoint tensors do not match config.json:\n" + "\n".join(problems))
  return len(expected)


class Progress:
  """A progress bar over the tensors (`console.bar`: stderr, ETA), advanced once per tensor name; `print_fn` is
  kept for the callers' start / end lines."""

  def __init__(self, total: int | None, print_fn=print):
    self.total, self.print_fn, self.bar = total, print_fn, None

  def __call__(self, name: str) -> None:
    if self.bar is None:  # made at the first tensor: `total` is known by then
      self.bar = console.bar(total=self.total, desc="tensors", unit="tensor")
    self.bar.set_postfix_str(name, refresh=False)
    self.bar.update(1)
    if self.total is not None and self.bar.n >= self.total:
      self.bar.close()


def import_hf(hf_dir: str, mesh: Mesh | None = None, num_units: int = 500, dtype: str = "bfloat16",
              tokenizer_dir: str | None = None, seed: int = 0, progress: Callable[[str], None] | None = None,
              scan_layers: bool = False):
  """(model, meta, tokenizer) from a HF / slamkit folder, the vocabulary extended by `num_units` units; with
  scan_layers the model holds its layers stacked (HF's per-layer tensors stacked as they are read)."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r} is not one of {DTYPES} (fp16 is never used)")
  src = open_hf(hf_dir)
  tokenizer = load_tokenizer(hf_dir, src, tokenizer_dir)
  layout, vocab = plan_vocab(src, tokenizer, num_units)
  overrides = dict(vocab_size=vocab, param_dtype=dtype, dtype=dtype, scan_layers=scan_layers)
  if src.kind == "slamkit":  # slamkit forces pad=0, bos=eos=1 (docs/reference.md §2 quirk): take the tokenizer's ids instead
    overrides.update(bos_token_id=layout.bos_id, eos_token_id=layout.eos_id)
  cfg = src.model_config(**overrides)
  total = check_tensors(src, cfg)
  if isinstance(progress, Progress):
    progress.total = total
  mesh = mesh if mesh is not None else sharding.make_mesh()
  old_rows = src.embedding_rows()

  def get(name):
    if name == EMBED and not src.has(EMBED):
      name = HEAD  # tied checkpoint stored under the head's name
    return src.get(name)

  def transform(name, arr):
    if name in (EMBED, HEAD):
      return grow_rows(arr, vocab, cfg.padded_vocab_size, seed=seed + (name == HEAD))
    return arr

  model = load_params(cfg, get, None, mesh, progress=progress, transform=transform)
  meta = orbax_io.make_meta(cfg, layout, dtype, source={"kind": src.kind, "path": os.path.abspath(hf_dir),
                                                        "embedding_rows": old_rows, "new_rows": vocab - old_rows,
                                                        "resize_seed": seed})
  return model, meta, tokenizer


def convert_hf_to_orbax(hf_dir: str, out_dir: str, num_units: int = 500, dtype: str = "bfloat16",
                        tokenizer_dir: str | None = None, mesh: Mesh | None = None, seed: int = 0,
                        overwrite: bool = False, print_fn=print) -> dict:
  """Writes the Orbax checkpoint (step 0) and its tokenizer to `out_dir` atomically; returns the metadata."""
  check_output(out_dir, overwrite)
  if not os.path.isdir(hf_dir):
    raise FileNotFoundError(f"Hugging Face folder {hf_dir} does not exist")
  model, meta, tokenizer = import_hf(hf_dir, mesh, num_units, dtype, tokenizer_dir, seed, Progress(None, print_fn))
  print_fn(f"writing Orbax checkpoint to {out_dir}")
  largest = max(x.size * x.dtype.itemsize for x in flat_params(model).values())
  with staged_output(out_dir, overwrite) as tmp:  # Orbax writes at most ~the largest tensor at a time
    orbax_io.save_model(tmp, model, meta, step=0, tokenizer=tokenizer, concurrent_gb=largest * 1.01 / 1e9 + 1e-3)
  layout = meta["vocab_layout"]
  print_fn(f"done: {meta['model_config']['arch']} vocab {meta['model_config']['vocab_size']} "
           f"(base {layout['base_size']} + {layout['num_units']} units"
           f"{' + 2 markers' if layout['num_units'] else ''}), {dtype}, {meta['source']['new_rows']} new rows")
  return meta
