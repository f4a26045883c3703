"""HF <-> Orbax conversion against transformers: bit-exact round trips, vocabulary growth, real SmolLM2
weights, slamkit folders and the error messages of both tools."""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from hf_tiny import torch_model
from slm_jax import sharding
from slm_jax.checkpoint import orbax_io
from slm_jax.checkpoint.hf_export import convert_orbax_to_hf
from slm_jax.checkpoint.hf_import import ShapeMismatch
from slm_jax.checkpoint.hf_source import UnknownArchitecture
from slm_jax.checkpoint.hf_to_orbax import VocabMismatch, convert_hf_to_orbax, import_hf
from slm_jax.checkpoint.safetensors_io import INDEX_FILE, SafetensorsReader, write_sharded
from slm_jax.checkpoint.staging import OutputExists, staged_output
from slm_jax.checkpoint.vocab_resize import grow_rows
from slm_jax.checkpoint.weight_map import relayout_layers
from slm_jax.model import preset
from slm_jax.vocab import Encoder, extend_tokenizer

QUIET = lambda s: None  # noqa: E731
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE = lambda: sharding.make_mesh(devices=jax.devices()[:1])  # noqa: E731
TORCH_DT = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _save_hf(path, cfg, tok_dir, dtype="float32", seed=0):
  """A tiny random transformers model saved with save_pretrained, plus the real Llama-3 tokenizer (Llama only:
  next to a qwen2 config.json, AutoTokenizer would pick Qwen2Tokenizer, which adds a token)."""
  tm = torch_model(cfg, seed=seed).to(TORCH_DT[dtype])
  tm.save_pretrained(path)
  if cfg.arch == "llama":
    for f in os.listdir(tok_dir):
      shutil.copy(os.path.join(tok_dir, f), path)
  return tm


def _bits(a):
  return np.ascontiguousarray(a).view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


def _hf_logits(model, ids):
  with torch.no_grad():
    return model(torch.tensor(ids)).logits.float().numpy()


@pytest.mark.parametrize("arch,tied,dtype", [("llama", True, "float32"), ("qwen2", False, "bfloat16")])
def test_roundtrip_is_bit_exact(tmp_path, llama3_tokenizer_dir, arch, tied, dtype):
  """No units added: every tensor comes back bit for bit, and transformers computes the same logits."""
  vocab = 128256 if arch == "llama" else 128384  # qwen-like: matrix larger than the tokenizer
  cfg = preset("tiny-" + arch, vocab_size=vocab, tie_word_embeddings=tied)
  src, ck, out = tmp_path / "hf", tmp_path / "ck", tmp_path / "out"
  _save_hf(src, cfg, llama3_tokenizer_dir, dtype)
  assert ("lm_head.weight" in SafetensorsReader(str(src))) == (not tied)
  meta = convert_hf_to_orbax(str(src), str(ck), num_units=0, dtype=dtype, tokenizer_dir=llama3_tokenizer_dir,
                             print_fn=QUIET)
  assert meta["dtype"] == dtype and meta["model_config"]["vocab_size"] == vocab
  assert meta["vocab_layout"]["base_size"] == 128256 and meta["source"]["new_rows"] == 0
  convert_orbax_to_hf(str(ck), str(out), dtype=dtype, print_fn=QUIET)
  a, b = SafetensorsReader(str(src)), SafetensorsReader(str(out))
  assert sorted(a.names()) == sorted(b.names())
  for name in a.names():
    x, y = a.get(name), b.get(name)
    assert x.dtype == y.dtype and x.shape == y.shape, name
    np.testing.assert_array_equal(_bits(x), _bits(y), err_msg=name)
  back = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=TORCH_DT[dtype])
  assert back.config.vocab_size == vocab and back.config.tie_word_embeddings == tied
  ids = np.random.RandomState(0).randint(0, vocab, (2, 12))
  orig = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=TORCH_DT[dtype])
  np.testing.assert_array_equal(_hf_logits(back, ids), _hf_logits(orig, ids))


@pytest.fixture(scope="module")
def llama_units(tmp_path_factory, llama3_tokenizer_dir):
  """Tiny tied Llama with the real Llama-3 tokenizer (fp32), converted with 500 units and exported back."""
  d = tmp_path_factory.mktemp("llama_units")
  cfg = preset("tiny-llama", vocab_size=128256)
  src, ck, out = d / "hf", d / "ck", d / "out"
  tm = _save_hf(src, cfg, llama3_tokenizer_dir, "float32")
  convert_hf_to_orbax(str(src), str(ck), num_units=500, dtype="float32", print_fn=QUIET)
  convert_orbax_to_hf(str(ck), str(out), dtype="float32", print_fn=QUIET)
  return cfg, tm, src, ck, out


def test_added_units_llama_tied(llama_units):
  """Llama-3-style tied model + 500 units: docs/reference.md §2 ids, 128758 rows exported, new rows as transformers' mean
  resizing makes them, old rows untouched, and transformers / our model / the tokenizers agree."""
  cfg, tm, src, ck, out = llama_units
  model, meta, _ = orbax_io.load_model(str(ck), sharding.make_mesh(fsdp=2, tensor=4))
  assert meta["vocab_layout"] == {"base_size": 128256, "num_units": 500, "bos_id": 128000, "eos_id": 128001}
  assert model.cfg.vocab_size == 128758 and model.cfg.padded_vocab_size == 128768
  back = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
  tok = transformers.AutoTokenizer.from_pretrained(out)
  assert back.config.vocab_size == len(tok) == 128758
  assert [tok.convert_tokens_to_ids(t) for t in ("<Un0>", "<Un499>", "<speech>", "<text>")] == \
      [128256, 128755, 128756, 128757]
  old = tm.model.embed_tokens.weight.detach().numpy()
  new = back.model.embed_tokens.weight.detach().numpy()
  np.testing.assert_array_equal(new[:128256], old)
  # transformers' own resize of the original model: the reference distribution of the new rows
  ref = torch_model(cfg)
  ref.resize_token_embeddings(128758)
  ref_new = ref.model.embed_tokens.weight.detach().numpy()[128256:]
  ours_new = new[128256:]
  mean = old.mean(0)
  noise = np.sqrt(1e-9 * old.var(0))  # per-dimension std of the added noise
  assert np.abs(ours_new.mean(0) - mean).max() < 0.5 * noise.max()
  assert np.abs(ref_new.mean(0) - mean).max() < 0.5 * noise.max()
  ratio = ours_new.std(0) / ref_new.std(0)
  assert 0.8 < np.median(ratio) < 1.25, np.median(ratio)
  assert np.abs(ours_new - ref_new).max() < 20 * noise.max()

  # logits: transformers on the export == transformers' resized model on the base columns (same weights),
  # and our JAX model == transformers on the export everywhere, for a string mixing text, units and markers
  enc = Encoder(tok, orbax_io.VocabLayout.from_dict(meta["vocab_layout"]))
  s = "<text> The cat sat<speech><Un12><Un7><Un499><Un0><text> on the mat"
  ids = enc.encode_string(s)
  assert ids.tolist() == [128000] + tok(s, add_special_tokens=False).input_ids
  text_ids = tok(" The cat sat on the mat", add_special_tokens=False).input_ids
  exported, resized = _hf_logits(back, [text_ids]), _hf_logits(ref, [text_ids])
  np.testing.assert_array_equal(exported[..., :128256], _hf_logits(tm, [text_ids]))
  np.testing.assert_array_equal(exported[..., :128256], resized[..., :128256])
  np.testing.assert_allclose(exported[..., 128256:], resized[..., 128256:], atol=1e-3, rtol=0)
  hf = _hf_logits(back, ids[None])
  ours = np.asarray(model.logits(model(jnp.asarray(ids[None]))))
  assert (ours[..., 128758:] < -1e8).all()
  np.testing.assert_allclose(ours[..., :128758], hf, atol=1e-4, rtol=0)


def test_added_units_qwen_untied_keeps_spare_rows(tmp_path, llama3_tokenizer_dir):
  """Qwen layout: rows between the tokenizer length and the matrix size are kept; only rows past the old
  matrix are new, in both the embedding and the untied head (each from its own statistics)."""
  cfg = preset("tiny-qwen2", vocab_size=128384, tie_word_embeddings=False)
  src = tmp_path / "hf"
  tm = _save_hf(src, cfg, llama3_tokenizer_dir, "bfloat16")
  with pytest.raises(FileNotFoundError, match="no tokenizer files"):
    import_hf(str(src), ONE(), dtype="bfloat16")
  model, meta, tok = import_hf(str(src), ONE(), num_units=500, dtype="bfloat16", tokenizer_dir=llama3_tokenizer_dir)
  assert len(tok) == 128758 and meta["model_config"]["vocab_size"] == 128758
  assert meta["source"] == {"kind": "hf", "path": str(src), "embedding_rows": 128384, "new_rows": 374,
                            "resize_seed": 0}
  emb = np.asarray(model.model.embed_tokens.embedding[...])
  head = np.asarray(model.lm_head.kernel[...]).T
  for ours, ref in ((emb, tm.model.embed_tokens.weight), (head, tm.lm_head.weight)):
    ref = ref.detach().float().numpy()
    np.testing.assert_array_equal(ours[:128384].astype(np.float32), ref)
    new = ours[128384:128758].astype(np.float32)
    np.testing.assert_allclose(new, np.broadcast_to(ref.mean(0), new.shape), atol=2 ** -8 * np.abs(ref).max())
    assert not ours[128758:].any()
  assert not np.array_equal(emb[128384:128758], head[128384:128758])


def test_grow_rows_matches_transformers_statistics():
  """Mean and covariance of new rows as in transformers' `_init_added_embeddings_weights_with_mean`; the
  not-positive-definite case falls back to the mean, as there."""
  g = torch.Generator().manual_seed(0)
  old = (torch.randn(3000, 16, generator=g) @ torch.randn(16, 16, generator=g) * 0.02 + 0.01).numpy()
  new = grow_rows(old, 3000 + 4000, 7040, seed=1)
  assert new.shape == (7040, 16) and not new[7000:].any()
  np.testing.assert_array_equal(new[:3000], old)
  emb = torch.nn.Embedding.from_pretrained(torch.tensor(old))
  ref_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=3000, hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=1))
  ref = ref_model._get_resized_embeddings(emb, 7000).weight.detach().numpy()[3000:]
  cov_old = np.cov(old.T, bias=True)
  for rows in (new[3000:7000], ref):
    np.testing.assert_allclose(rows.mean(0), old.mean(0), atol=1e-5)
    cov = np.cov((rows - old.mean(0)).astype(np.float64).T)
    assert np.linalg.norm(cov - 1e-9 * cov_old) < 0.1 * np.linalg.norm(1e-9 * cov_old)
  few = old[:4]  # 4 rows in 16 dims: singular covariance -> every new row is the mean
  got = grow_rows(few, 10)[4:]
  ref = ref_model._get_resized_embeddings(torch.nn.Embedding.from_pretrained(torch.tensor(few)), 10)
  np.testing.assert_allclose(got, ref.weight.detach().numpy()[4:], rtol=0, atol=1e-7)
  np.testing.assert_allclose(got, np.broadcast_to(few.mean(0), got.shape), rtol=0, atol=1e-7)


def test_smollm2_real_weights(smollm2_dir):
  """Real SmolLM2-135M weights through the importer (500 units added): transformers' logits on the base
  vocabulary within 1e-3 (fp32) and the same greedy continuation."""
  model, meta, tok = import_hf(smollm2_dir, ONE(), num_units=500, dtype="float32")
  assert meta["vocab_layout"]["base_size"] == 49152 and model.cfg.vocab_size == 49654
  ref = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
  prompt = tok("The capital of France is", add_special_tokens=False).input_ids
  new_tokens, length = 5, 16
  ref_ids, ids = list(prompt), list(prompt)
  for i in range(new_tokens):  # greedy, full recompute; ours on a fixed-length buffer (causal: the tail is unused)
    ref_logits = _hf_logits(ref, [ref_ids])[0]
    ref_ids.append(int(ref_logits[-1].argmax()))
    buf = np.zeros((1, length), np.int32)
    buf[0, :len(ids)] = ids
    logits = np.asarray(model.logits(model(jnp.asarray(buf))))[0, :len(ids)]
    if i == 0:
      np.testing.assert_allclose(logits[:, :49152], ref_logits, atol=1e-3, rtol=0)
    ids.append(int(logits[-1].argmax()))
  assert ids == ref_ids, (tok.decode(ids), tok.decode(ref_ids))
  assert tok.decode(ids[len(prompt):]).startswith(" Paris")


def _make_slamkit(path, cfg, tok_dir):
  """A folder laid out as slamkit's UnitLM.save_pretrained writes it: weights under `lm.`, base config nested,
  vocabulary already grown to the extended tokenizer's length (resize_token_embeddings), no tokenizer."""
  tm = torch_model(cfg, seed=5)
  tm.resize_token_embeddings(128758)
  os.makedirs(path)
  sd = {k: v.detach().numpy() for k, v in tm.state_dict().items() if k != "lm_head.weight"}
  specs = [("lm." + k, v.shape, v.dtype) for k, v in sd.items()]
  write_sharded(str(path), specs, lambda n: sd[n[3:]])
  base = json.loads(tm.config.to_json_string())
  base.update(pad_token_id=0, bos_token_id=1, eos_token_id=1)  # slamkit's forced ids (docs/reference.md §2 quirk)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"model_type": "speech_language_model", "architectures": ["UnitLM"],
               "base_model_name": "meta-llama/Llama-3.2-3B", "base_config": base, "vocab_size": 128758,
               "twist_init": True, "tie_word_embeddings": True, "dtype": "float32"}, f)
  return tm


def test_slamkit_folder(tmp_path, llama3_tokenizer_dir):
  cfg = preset("tiny-llama", vocab_size=128256)
  src = tmp_path / "slamkit"
  tm = _make_slamkit(src, cfg, llama3_tokenizer_dir)
  with pytest.raises(FileNotFoundError, match="pass --tokenizer_dir"):
    import_hf(str(src), ONE(), dtype="float32")
  model, meta, tok = import_hf(str(src), ONE(), dtype="float32", tokenizer_dir=llama3_tokenizer_dir)
  assert meta["source"]["kind"] == "slamkit" and meta["source"]["new_rows"] == 0
  assert (model.cfg.vocab_size, model.cfg.bos_token_id, model.cfg.eos_token_id) == (128758, 128000, 128001)
  ids = np.array([[128000, 128757, 578, 8415, 128756, 128268, 128755, 128256]])
  ours = np.asarray(model.logits(model(jnp.asarray(ids))))[..., :128758]
  np.testing.assert_allclose(ours, _hf_logits(tm, ids), atol=1e-4, rtol=0)
  with pytest.raises(VocabMismatch, match="slamkit config vocab_size 128758"):
    import_hf(str(src), ONE(), num_units=400, dtype="float32", tokenizer_dir=llama3_tokenizer_dir)


def test_sharded_export_and_reimport(tmp_path, llama_units):
  """bf16 export of an fp32 checkpoint in shards of a given maximum size with an index; transformers loads it;
  re-importing it gives the same (bf16-rounded) parameters, with no new rows and the tokenizer unchanged."""
  _, _, _, ck, _ = llama_units
  out, ck2 = tmp_path / "out", tmp_path / "ck2"
  files = convert_orbax_to_hf(str(ck), str(out), max_shard_bytes=40_000, print_fn=QUIET)
  weight_map = json.loads((out / INDEX_FILE).read_text())["weight_map"]
  assert len(files) >= 3 and sorted(set(weight_map.values())) == files
  for f in files:  # at most the limit, unless one tensor alone is larger (the 16 MB embedding)
    n = sum(1 for v in weight_map.values() if v == f)
    assert n == 1 or os.path.getsize(out / f) <= 40_000 + 8 + 4096, (f, n)
  back = transformers.AutoModelForCausalLM.from_pretrained(out)
  assert back.model.embed_tokens.weight.shape == (128758, 64) and back.dtype == torch.bfloat16
  convert_hf_to_orbax(str(out), str(ck2), dtype="bfloat16", print_fn=QUIET)
  m1, _, _ = orbax_io.load_model(str(ck), ONE())
  m2, meta2, _ = orbax_io.load_model(str(ck2), ONE())
  assert meta2["source"]["new_rows"] == 0 and meta2["vocab_layout"]["base_size"] == 128256
  for a, b in zip(jax.tree.leaves(orbax_io.params_pure(m1)), jax.tree.leaves(orbax_io.params_pure(m2))):
    np.testing.assert_array_equal(_bits(np.asarray(a).astype(jnp.bfloat16)), _bits(np.asarray(b)))


def test_stacked_layers_convert_at_import_and_export(tmp_path, llama3_tokenizer_dir):
  """scan_layers=True: HF's per-layer tensors are stacked at import ([L, ...] parameters, transformers' logits),
  the Orbax checkpoint stores them stacked, the export slices them back bit for bit, and load_model converts
  either stored layout to the one asked for; a resume with the other layout is refused by name."""
  cfg = preset("tiny-llama", vocab_size=128256, tie_word_embeddings=False, num_hidden_layers=3)
  src, ck, ck_loop, out = tmp_path / "hf", tmp_path / "ck", tmp_path / "ck_loop", tmp_path / "out"
  tm = _save_hf(src, cfg, llama3_tokenizer_dir, "float32")
  model, meta, tok = import_hf(str(src), ONE(), num_units=0, dtype="float32", scan_layers=True)
  assert model.model.layers.self_attn.q_proj.kernel.shape == (3, 64, 64) and meta[orbax_io.LAYERS_STACKED]
  ids = np.random.RandomState(1).randint(0, 128256, (2, 12))
  np.testing.assert_allclose(np.asarray(model.logits(model(jnp.asarray(ids))))[..., :128256], _hf_logits(tm, ids),
                             atol=1e-4, rtol=0)
  orbax_io.save_model(str(ck), model, meta, tokenizer=tok)
  convert_orbax_to_hf(str(ck), str(out), dtype="float32", print_fn=QUIET)
  a, b = SafetensorsReader(str(src)), SafetensorsReader(str(out))
  assert sorted(a.names()) == sorted(b.names())
  for name in a.names():
    np.testing.assert_array_equal(_bits(a.get(name)), _bits(b.get(name)), err_msg=name)

  convert_hf_to_orbax(str(src), str(ck_loop), num_units=0, dtype="float32", print_fn=QUIET)
  loop_meta, _ = orbax_io.read_meta(str(ck_loop))
  assert not loop_meta[orbax_io.LAYERS_STACKED]
  want = orbax_io.params_pure(orbax_io.load_model(str(ck_loop), ONE())[0])
  mesh = sharding.make_mesh(fsdp=2, tensor=4)
  for path, scan in ((ck, True), (ck, False), (ck_loop, True), (ck_loop, False)):
    m, _, _ = orbax_io.load_model(str(path), mesh, cfg_overrides={"scan_layers": scan})
    assert m.cfg.scan_layers == scan and isinstance(m.model.layers, nnx.List) != scan
    got = relayout_layers(orbax_io.params_pure(m), stacked=False)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert orbax_io.load_model(str(ck), ONE())[0].cfg.scan_layers  # the stored layout by default

  orbax_io.check_layers_layout(meta, cfg.replace(scan_layers=True))
  with pytest.raises(orbax_io.MetadataMismatch, match="stores the decoder layers stacked .* asks for scan_layers="
                                                      "False: resume with --config.model.scan_layers=True"):
    orbax_io.check_layers_layout(meta, cfg)
  # written before the stacked layout: scan_layers=True in its config, layers per layer, no layers_stacked key
  old = {k: v for k, v in loop_meta.items() if k != orbax_io.LAYERS_STACKED}
  old["model_config"] = {**old["model_config"], "scan_layers": True}
  assert not orbax_io.saved_config(old).scan_layers
  with pytest.raises(orbax_io.MetadataMismatch, match="per layer"):
    orbax_io.check_layers_layout(old, cfg.replace(scan_layers=True))


def test_errors(tmp_path, llama_units, llama3_tokenizer_dir, smollm2_dir):
  _, _, src, ck, _ = llama_units
  # missing folders
  with pytest.raises(FileNotFoundError, match="does not exist"):
    convert_hf_to_orbax(str(tmp_path / "nope"), str(tmp_path / "ck"), print_fn=QUIET)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    convert_orbax_to_hf(str(tmp_path / "nope"), str(tmp_path / "o"), print_fn=QUIET)
  # unknown architecture
  bad = tmp_path / "gpt2"
  shutil.copytree(src, bad)
  conf = json.loads((bad / "config.json").read_text())
  (bad / "config.json").write_text(json.dumps({**conf, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
  with pytest.raises(UnknownArchitecture, match="model_type='gpt2'"):
    convert_hf_to_orbax(str(bad), str(tmp_path / "ck"), print_fn=QUIET)
  # shapes that do not match config.json
  (bad / "config.json").write_text(json.dumps({**conf, "intermediate_size": 96}))
  with pytest.raises(ShapeMismatch, match=r"mlp.up_proj.weight: shape \(128, 64\) in the checkpoint, config.json "
                                          r"implies \(96, 64\)"):
    convert_hf_to_orbax(str(bad), str(tmp_path / "ck"), print_fn=QUIET)
  # tokenizer longer than the embedding
  with pytest.raises(VocabMismatch, match="has only 49152 rows"):
    import_hf(smollm2_dir, ONE(), tokenizer_dir=llama3_tokenizer_dir)
  # a tokenizer that does not give the checkpoint's vocabulary
  with pytest.raises(VocabMismatch, match="has no <Un0> token"):
    convert_orbax_to_hf(str(ck), str(tmp_path / "o"), tokenizer_dir=smollm2_dir, print_fn=QUIET)
  other = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
  extend_tokenizer(other)
  other.save_pretrained(tmp_path / "other_tok")
  with pytest.raises(VocabMismatch, match="vocab_layout.base_size: checkpoint has 128256, expected 49152"):
    convert_orbax_to_hf(str(ck), str(tmp_path / "o"), tokenizer_dir=str(tmp_path / "other_tok"), print_fn=QUIET)
  assert not os.path.exists(tmp_path / "o")
  with pytest.raises(ValueError, match="never written"):
    convert_orbax_to_hf(str(ck), str(tmp_path / "o"), dtype="float16", print_fn=QUIET)
  with pytest.raises(OutputExists):
    convert_hf_to_orbax(str(src), str(ck), print_fn=QUIET)
  # the command-line tools say so without a traceback
  r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_orbax_to_hf.py"),
                      f"--ckpt_dir={tmp_path / 'nope'}", f"--out_dir={tmp_path / 'o'}"], capture_output=True,
                     text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 2 and "error: checkpoint directory" in r.stderr and "Traceback" not in r.stderr


def test_staged_output_leaves_nothing_on_failure(tmp_path):
  out = tmp_path / "out"
  with pytest.raises(RuntimeError):
    with staged_output(str(out)) as tmp:
      open(os.path.join(tmp, "model.safetensors"), "w").close()
      raise RuntimeError("interrupted")
  assert os.listdir(tmp_path) == []
  with staged_output(str(out)) as tmp:
    open(os.path.join(tmp, "done"), "w").close()
  assert os.listdir(out) == ["done"] and os.listdir(tmp_path) == ["out"]
