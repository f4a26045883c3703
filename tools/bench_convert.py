"""Benchmark: HF -> Orbax (500 units added) -> HF on a random Llama-3.2-3B-shaped bf16 checkpoint, next to
transformers' own path (from_pretrained, resize_token_embeddings, save_pretrained).

Each step runs in its own subprocess, so its peak RSS is its own (`os.wait4`). Needs ~30 GB of free disk in
--work_dir (removed afterwards unless --keep) and a Llama-3 tokenizer (default: the test fixture).

  python tools/bench_convert.py [--preset=llama3.2-3b] [--work_dir=/tmp] [--keep] [--verify]
  python tools/bench_convert.py --preset=tiny-llama --vocab_size=128256   # a quick run
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "llama3.2-3b", "Model preset whose shapes the random checkpoint takes.")
flags.DEFINE_integer("vocab_size", 0, "Vocabulary of the random checkpoint (0: the preset's; at least the "
                     "tokenizer's 128,256 for a small preset such as tiny-llama).")
flags.DEFINE_string("work_dir", None, "Parent folder of the temporary working folder (default: system temp).")
flags.DEFINE_string("tokenizer_dir", None, "Llama-3 tokenizer folder (default: slm_jax.assets.llama3_tokenizer_dir()).")
flags.DEFINE_bool("keep", False, "Keep the working folder.")
flags.DEFINE_bool("verify", True, "Check that the exported tensors equal the original ones (streamed).")
flags.DEFINE_bool("transformers", True, "Also time transformers' own path.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

MAKE = """
import json, sys, torch, transformers
from slm_jax.model import preset
d = preset(sys.argv[1], **({"vocab_size": int(sys.argv[3])} if int(sys.argv[3]) else {})).to_hf_dict("bfloat16")
cfg = transformers.LlamaConfig(**{k: v for k, v in d.items() if k not in ("architectures", "model_type", "dtype")})
torch.manual_seed(0)
model = transformers.LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
model.save_pretrained(sys.argv[2])
"""

HF_PATH = """
import json, resource, sys, time, torch, transformers
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = {}
t = time.time(); m = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
out["load"] = (time.time() - t, rss())
t = time.time(); m.resize_token_embeddings(int(sys.argv[3]), mean_resizing=True)
out["resize_token_embeddings"] = (time.time() - t, rss())
t = time.time(); m.save_pretrained(sys.argv[2])
out["save_pretrained"] = (time.time() - t, rss())
print("RESULT " + json.dumps(out))
"""


def run(cmd: list[str], env=None) -> tuple[float, int, str]:
  """(wall s, peak RSS bytes of that child, stdout)."""
  t = time.time()
  p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
  out = []
  for line in p.stdout:
    out.append(line)
  _, status, usage = os.wait4(p.pid, 0)
  p.returncode = os.waitstatus_to_exitcode(status)
  wall = time.time() - t
  if p.returncode:
    raise RuntimeError(f"{' '.join(cmd[:3])} failed ({p.returncode}):\n{''.join(out[-30:])}")
  return wall, usage.ru_maxrss * 1024, "".join(out)


def dir_bytes(d: str) -> int:
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def verify(src: str, out: str, base_rows: int) -> str:
  import numpy as np
  from slm_jax.checkpoint.safetensors_io import SafetensorsReader
  a, b = SafetensorsReader(src), SafetensorsReader(out)
  for name in a.names():
    x, y = a.get(name), b.get(name)
    if name == "model.embed_tokens.weight":
      y = y[:base_rows]
    if x.shape != y.shape or not np.array_equal(x.view(np.uint16), y.view(np.uint16)):
      return f"MISMATCH in {name}"
  return f"all {len(a.names())} original tensors equal bit for bit"


def main(argv):
  del argv
  tok_dir = FLAGS.tokenizer_dir
  if tok_dir is None:
    from slm_jax import assets
    tok_dir = assets.llama3_tokenizer_dir()
  work = tempfile.mkdtemp(prefix="bench_convert_", dir=FLAGS.work_dir)
  env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
  src, ck, out, hf_out = (os.path.join(work, n) for n in ("hf", "orbax", "hf_out", "hf_resized"))
  rows = []
  try:
    print(f"[bench] random {FLAGS.preset} bf16 checkpoint -> {src}", flush=True)
    wall, peak, _ = run([PY, "-c", MAKE, FLAGS.preset, src, str(FLAGS.vocab_size)], env)
    for f in os.listdir(tok_dir):
      shutil.copy(os.path.join(tok_dir, f), src)
    size = dir_bytes(src)
    print(f"[bench] made in {wall:.0f} s, {size / 1e9:.2f} GB, peak RSS {peak / 1e9:.2f} GB", flush=True)
    tools = os.path.join(ROOT, "tools")
    steps = [("slm_jax import (convert_hf_to_orbax, +500 units)",
              [PY, os.path.join(tools, "convert_hf_to_orbax.py"), f"--hf_dir={src}", f"--out_dir={ck}",
               "--add_speech_units=500", "--dtype=bfloat16"]),
             ("slm_jax export (convert_orbax_to_hf, bf16)",
              [PY, os.path.join(tools, "convert_orbax_to_hf.py"), f"--ckpt_dir={ck}", f"--out_dir={out}",
               "--dtype=bfloat16"])]
    for name, cmd in steps:
      print(f"[bench] {name}", flush=True)
      wall, peak, log = run(cmd, env)
      lines = log.splitlines()
      prog = [ln for ln in lines if re.match(r"\[\d+/\d+\] ", ln)]
      keep = [ln for ln in lines if ln in prog[:1] + prog[-1:] or not (ln in prog or re.match(r"[IWE]\d{4} ", ln))]
      print("\n".join("    " + ln for ln in keep), flush=True)
      rows.append((name, wall, peak))
    vocab = json.load(open(os.path.join(out, "config.json")))["vocab_size"]
    if FLAGS.transformers:
      print("[bench] transformers: from_pretrained, resize_token_embeddings, save_pretrained", flush=True)
      wall, peak, log = run([PY, "-c", HF_PATH, src, hf_out, str(vocab)], env)
      res = json.loads(log.split("RESULT ", 1)[1])
      for k, (w, p) in res.items():
        rows.append((f"transformers {k} (peak so far)", w, p))
      rows.append(("transformers whole process", wall, peak))
    check = verify(src, out, json.load(open(os.path.join(src, "config.json")))["vocab_size"]) \
        if FLAGS.verify else "not verified"
    print(f"\ncheckpoint: {FLAGS.preset} bf16, {size / 1e9:.2f} GB; exported vocab {vocab}; {check}")
    print(f"machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f}"
          f" GiB; load average at end {os.getloadavg()[0]:.1f}")
    print(f"{'step':58s} {'wall s':>8s} {'peak RSS GB':>12s} {'x ckpt':>7s}")
    for name, wall, peak in rows:
      print(f"{name:58s} {wall:8.1f} {peak / 1e9:12.2f} {peak / size:7.2f}")
  finally:
    if FLAGS.keep:
      print(f"kept {work}")
    else:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
