"""Faults and bad inputs (issue 11's probes): each gives a precise error or is survived, and nothing hangs.

Config validation (one test per rule), one trainer per workdir, restoring past a damaged checkpoint, clean
shutdown, and the bad inputs of the data, units, evaluation and conversion tools.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from slm_jax.train import validate
from repo_configs import load_config, set_keys
from xla_env import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(**overrides):
  c = load_config("demo", "tiny")
  c.unlock()
  c.global_batch_size, c.tensorboard = 8, False
  return set_keys(c, overrides)


def _problems(devices=8, workdir=None, **overrides):
  return validate.problems(_tiny(**overrides), workdir, device_count=devices)


def _env(devices=1):
  env = dict(os.environ, XLA_FLAGS=xla_flags(devices), JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _train_cmd(workdir, *extra):
  return [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--config=configs/demo.py:tiny",
          f"--workdir={workdir}", "--config.log_every=1", "--config.tensorboard=False", *extra]


# ---------------------------------------------------------------- config validation: one test per rule

def test_config_valid_tiny_has_no_problems():
  assert _problems() == []


def test_config_positive_lr_and_sizes_all_listed_at_once():
  got = _problems(**{"optim.lr": -0.001, "optim.min_lr": -1e-5, "seq_len": 0, "global_batch_size": 0,
                     "micro_batches": 0, "log_every": 0})
  for key in ("optim.lr=-0.001", "optim.min_lr=-1e-05", "seq_len=0", "global_batch_size=0", "micro_batches=0",
              "log_every=0"):
    assert any(p.startswith(f"config.{key}:") for p in got), (key, got)
  assert len(got) == 6, got
  assert any("min_lr" in p and "exceed" in p for p in _problems(**{"optim.min_lr": 0.5}))


def test_config_batch_divides_over_mesh_and_micro_batches():
  assert any("data x fsdp = 1 x 2" in p for p in _problems(devices=2, global_batch_size=3))
  assert _problems(devices=2, global_batch_size=4) == []
  assert any("micro_batches=3" in p for p in _problems(micro_batches=3))
  assert any("data x fsdp = 2 x 4" in p for p in _problems(devices=8, global_batch_size=4, **{"mesh.data": 2}))
  assert any("needs 6 devices" in p for p in _problems(devices=8, **{"mesh.data": 2, "mesh.fsdp": 3}))
  assert any("at most one axis" in p for p in _problems(**{"mesh.data": -1}))
  assert any("4 processes" in p for p in validate.problems(_tiny(global_batch_size=6), device_count=2,
                                                             process_count=4))


def test_config_seq_len_within_model_positions(tmp_path):
  got = _problems(seq_len=64, **{"model.overrides.max_position_embeddings": 48})
  assert got == ["config.seq_len=64 exceeds the model's max_position_embeddings=48 (config.model.overrides)"]
  hf = tmp_path / "hf"
  hf.mkdir()
  (hf / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 16}))
  got = _problems(seq_len=32, **{"init.kind": "hf", "init.path": str(hf)})
  assert got == [f"config.seq_len=32 exceeds the model's max_position_embeddings=16 ({hf}/config.json)"]


def test_config_unknown_choices():
  got = _problems(precision="fp16", objective="ppo", **{"model.attention_impl": "flash", "init.kind": "scratch",
                                                        "data.kind": "files", "data.interleave_mode": "shuffle",
                                                        "vocab.layout": "twist"})
  for key in ("precision", "objective", "model.attention_impl", "init.kind", "data.kind", "data.interleave_mode",
              "vocab.layout"):
    assert any(p.startswith(f"config.{key}=") and "expected one of" in p for p in got), (key, got)
  assert any("model.preset='llama-9b'" in p for p in _problems(**{"model.preset": "llama-9b"}))
  assert any("needs a bf16 compute dtype" in p for p in _problems(**{"model.attention_impl": "cudnn"}))
  assert any("overrides.hidden" in p for p in _problems(**{"model.overrides.hidden": 3}))


def test_config_paths_that_must_exist(tmp_path):
  missing = str(tmp_path / "nowhere")
  got = _problems(**{"init.kind": "hf", "init.path": missing, "vocab.tokenizer": missing, "data.kind": "pipeline",
                     "data.sources.speech": missing, "data.sources.text": str(tmp_path)})
  assert f"config.init.path={missing!r}: no such folder" in got
  assert f"config.vocab.tokenizer={missing!r}: no such folder" in got
  assert f"config.data.sources.speech={missing!r}: no such folder" in got
  assert any(p.startswith(f"config.data.sources.text={str(tmp_path)!r}: ") and "not a prepared dataset" in p
             for p in got), got
  assert "no config.json" in _problems(**{"init.kind": "hf", "init.path": str(tmp_path)})[0]
  none = {f"data.sources.{k}": "" for k in ("interleaved", "speech", "text")}
  assert any("no prepared folder" in p for p in _problems(**{"data.kind": "pipeline", **none}))


def test_config_stop_condition_that_can_be_met():
  assert _problems(total_steps=0, token_budget=0.0) == [
      "config.total_steps and config.token_budget are both 0: set one"]
  got = _problems(total_steps=0, max_wall_s=60.0)
  assert len(got) == 1 and "max_wall_s=60.0 alone gives no learning-rate schedule" in got[0]
  assert any("config.total_steps=-5" in p for p in _problems(total_steps=-5))
  assert any("config.max_wall_s=-1.0" in p for p in _problems(max_wall_s=-1.0))
  assert any("less than one label token" in p for p in _problems(total_steps=0, token_budget=0.5))


def test_train_tool_exits_2_with_every_problem_and_no_traceback(tmp_path):
  workdir = tmp_path / "run"
  r = subprocess.run(_train_cmd(workdir, "--config.optim.lr=-0.001", "--config.seq_len=0",
                                "--config.global_batch_size=0"), cwd=ROOT, env=_env(), capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 2, r.stderr[-2000:]
  assert "Traceback" not in r.stderr and "3 problems" in r.stderr
  for key in ("optim.lr=-0.001", "seq_len=0", "global_batch_size=0"):
    assert f"config.{key}:" in r.stderr
  assert not workdir.exists()
  # global batch 3 on 2 devices: refused before the model is built (the -1 mesh axis needs the device count)
  r = subprocess.run(_train_cmd(workdir, "--config.global_batch_size=3"), cwd=ROOT, env=_env(2),
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert "global_batch_size=3 does not divide over the mesh's data x fsdp = 1 x 2" in r.stderr
  assert not workdir.exists()


# ---------------------------------------------------------------- one trainer per workdir

def test_lock_takes_over_stale_refuses_live_and_other_hosts(tmp_path, caplog):
  import time
  from slm_jax.train.lock import LOCK_NAME, WorkdirLock, WorkdirLocked
  path = tmp_path / LOCK_NAME
  gone = subprocess.Popen(["true"])
  gone.wait()
  host = socket.gethostname()
  path.write_text(json.dumps({"host": host, "pid": gone.pid, "start": 0}))
  with caplog.at_level("WARNING"):
    lock = WorkdirLock(str(tmp_path)).acquire()
  assert f"process {gone.pid} is gone" in caplog.text
  assert json.loads(path.read_text())["pid"] == os.getpid()
  with pytest.raises(WorkdirLocked, match=rf"host {host} pid {os.getpid()} since"):
    WorkdirLock(str(tmp_path)).acquire()  # held by a live process (this one)
  lock.release()
  assert not path.exists()
  path.write_text(json.dumps({"host": "elsewhere", "pid": gone.pid, "start": 0}))
  t = time.time()
  with pytest.raises(WorkdirLocked, match=r"host elsewhere pid"):
    WorkdirLock(str(tmp_path)).acquire()  # another host's process may be alive: never taken over
  path.write_text("")  # a creator killed before it wrote the file: refused while young, taken over when old
  with pytest.raises(WorkdirLocked, match="has not written it yet"):
    WorkdirLock(str(tmp_path)).acquire()
  assert time.time() - t < 5
  os.utime(path, (time.time() - 60, time.time() - 60))
  WorkdirLock(str(tmp_path)).acquire().release()
  assert WorkdirLock(str(tmp_path), enabled=False).acquire().held is False  # processes other than 0


def test_two_trainers_on_one_workdir_then_a_stale_lock(tmp_path):
  """Two tools/train.py started at once: one trains, the other exits 2 at once naming it. After the trainer is
  killed (-9) its lock is stale: the next run takes it over with a warning and resumes."""
  import time
  workdir = str(tmp_path / "run")
  long = ("--config.total_steps=100000", "--config.checkpoint_every=2")
  procs = [subprocess.Popen(_train_cmd(workdir, *long), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for _ in range(2)]
  t = time.time()
  while all(p.poll() is None for p in procs):
    assert time.time() - t < 120, "neither trainer stopped"
    time.sleep(0.05)
  loser = next(p for p in procs if p.poll() is not None)
  winner = next(p for p in procs if p is not loser)
  out = loser.communicate()[0]
  assert loser.returncode == 2 and "Traceback" not in out, out[-3000:]
  assert f"is in use by another trainer (host {socket.gethostname()} pid {winner.pid} since" in out
  ckpt = os.path.join(workdir, "checkpoints")

  def complete_steps():  # Orbax renames a step folder to its number once the save is complete
    return [int(n) for n in os.listdir(ckpt) if n.isdigit()] if os.path.isdir(ckpt) else []

  while not complete_steps():
    assert winner.poll() is None and time.time() - t < 240, winner.communicate()[0][-3000:]
    time.sleep(0.05)
  winner.send_signal(signal.SIGKILL)
  winner.wait()
  assert os.path.exists(os.path.join(workdir, "train.lock"))
  steps = complete_steps()
  r = subprocess.run(_train_cmd(workdir, f"--config.total_steps={max(steps) + 2}"), cwd=ROOT, env=_env(),
                     capture_output=True, text=True, timeout=240)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "taking over the stale lock" in r.stderr and f"process {winner.pid} is gone" in r.stderr
  assert "resuming from" in r.stdout and json.loads(r.stdout.strip().splitlines()[-1])["step"] == max(steps) + 2
  assert not os.path.exists(os.path.join(workdir, "train.lock"))


# ---------------------------------------------------------------- restoring past a damaged checkpoint

def _losses(workdir) -> dict:
  from slm_jax.train.metrics import read_jsonl
  return {r["step"]: r["loss"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))}


def _truncate_largest_array(step_dir):
  data = os.path.join(step_dir, "params", "d")  # the OCDBT data files the params manifest points to
  big = max((os.path.join(data, f) for f in os.listdir(data)), key=os.path.getsize)
  with open(big, "r+b") as f:
    f.truncate(1000)


DAMAGE = {
    "truncated_array_file": _truncate_largest_array,
    "missing_data_iterator_state": lambda d: os.remove(os.path.join(d, "data", "process_0-of-1.json")),
    "missing_metadata_file": lambda d: os.remove(os.path.join(d, "meta", "metadata")),
}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """6 uninterrupted steps with checkpoints at 2, 4, 6."""
  from slm_jax.train import trainer
  workdir = str(tmp_path_factory.mktemp("reference"))
  out = trainer.train(_tiny(total_steps=6, checkpoint_every=2, keep_last=4), workdir)
  assert out["status"] == "total_steps" and sorted(_losses(workdir)) == list(range(1, 7))
  return workdir


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_restore_goes_past_a_damaged_newest_step(reference_run, tmp_path, damage, capsys):
  import shutil
  from slm_jax.train import trainer
  workdir = str(tmp_path / "run")
  shutil.copytree(reference_run, workdir)
  ckpt = os.path.join(workdir, "checkpoints")
  DAMAGE[damage](os.path.join(ckpt, "6"))
  out = trainer.train(_tiny(total_steps=6, checkpoint_every=2, keep_last=4), workdir)
  assert "resuming from" in capsys.readouterr().out and out["step"] == 6
  assert _losses(workdir) == _losses(reference_run)  # steps 5 and 6 recomputed from step 4: the same losses
  assert sorted(int(n) for n in os.listdir(ckpt) if n.isdigit()) == [2, 4, 6]
  kept = os.listdir(ckpt + ".damaged")  # set aside, not deleted
  assert len(kept) == 1 and kept[0].startswith("6-")


def test_resume_with_the_other_layer_layout_is_a_clear_error_and_sets_nothing_aside(reference_run, tmp_path):
  """The reference run stores its layers one by one (scan_layers=False); resuming with stacked layers would need
  its optimizer state stacked too: refused before any step is touched, naming the flag that resumes it."""
  import shutil
  from slm_jax.checkpoint.orbax_io import MetadataMismatch
  from slm_jax.train import trainer
  workdir = str(tmp_path / "run")
  shutil.copytree(reference_run, workdir)
  with pytest.raises(MetadataMismatch, match=r"step 6 stores the decoder layers per layer .* "
                                             r"--config.model.scan_layers=False"):
    trainer.train(_tiny(total_steps=8, checkpoint_every=2, keep_last=4, **{"model.scan_layers": True}), workdir)
  ckpt = os.path.join(workdir, "checkpoints")
  assert sorted(int(n) for n in os.listdir(ckpt) if n.isdigit()) == [2, 4, 6]
  assert not os.path.exists(ckpt + ".damaged")


def test_no_restorable_step_is_a_clear_error_listing_each_step(reference_run, tmp_path):
  import shutil
  from slm_jax.train import trainer
  workdir = str(tmp_path / "run")
  shutil.copytree(reference_run, workdir)
  ckpt = os.path.join(workdir, "checkpoints")
  for step in (2, 4, 6):
    DAMAGE["missing_metadata_file" if step % 4 else "missing_data_iterator_state"](os.path.join(ckpt, str(step)))
  with pytest.raises(trainer.NoRestorableCheckpoint) as e:
    trainer.train(_tiny(total_steps=10, checkpoint_every=2, keep_last=4), workdir)
  lines = str(e.value).splitlines()
  assert "nothing was deleted" in lines[0] and [ln.split(":")[0].strip() for ln in lines[1:]] == [
      "step 6", "step 4", "step 2"]
  assert "metadata" in lines[1] and "process_0-of-1.json" in lines[2]
  assert sorted(int(n) for n in os.listdir(ckpt) if n.isdigit()) == [2, 4, 6]
  assert not os.path.exists(ckpt + ".damaged") and not os.path.exists(os.path.join(workdir, "train.lock"))


# ---------------------------------------------------------------- clean shutdown

class _FailingIterator:
  """A training iterator whose `fail_at`-th batch raises (a data error in the middle of a run)."""

  def __init__(self, inner, fail_at):
    self.inner, self.fail_at, self.n = inner, fail_at, 0

  def __iter__(self):
    return self

  def __next__(self):
    self.n += 1
    if self.n == self.fail_at:
      raise OSError("record 123 of shard 7: unreadable")
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)


def test_an_error_in_the_loop_closes_everything_and_the_save_in_flight_completes(tmp_path, monkeypatch):
  from slm_jax.checkpoint import orbax_io
  from slm_jax.train import trainer
  make = trainer.data_lib.make_iterator
  monkeypatch.setattr(trainer.data_lib, "make_iterator",
                      lambda *a, **k: _FailingIterator(make(*a, **k), fail_at=4) if a[3] == "train" else make(*a, **k))
  closed = []
  monkeypatch.setattr(trainer.MetricsWriter, "close", lambda self: closed.append("writer"))
  workdir = str(tmp_path)
  with pytest.raises(OSError, match="record 123"):  # batch 4 is fetched while step 3 runs, after step 2's save
    trainer.train(_tiny(total_steps=6, checkpoint_every=2), workdir)
  assert closed == ["writer"] and not os.path.exists(os.path.join(workdir, "train.lock"))
  ckpt = os.path.join(workdir, "checkpoints")
  assert orbax_io.read_meta(ckpt)[1] == 2  # the async save of step 2 was waited for: complete
  assert [n for n in os.listdir(ckpt) if "tmp" in n] == []


def test_ctrl_c_saves_like_sigterm(tmp_path):
  import time
  from slm_jax.checkpoint import orbax_io
  workdir = str(tmp_path)
  proc = subprocess.Popen(_train_cmd(workdir, "--config.total_steps=100000", "--config.checkpoint_every=100000"),
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  t = time.time()
  while max(_losses(workdir) or [0]) < 3:
    assert proc.poll() is None and time.time() - t < 240, proc.communicate()[1][-3000:]
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=240)
  assert proc.returncode == 0, err[-3000:]
  summary = json.loads(out.strip().splitlines()[-1])
  assert summary["status"] == "interrupted" and "SIGINT received" in out
  assert orbax_io.read_meta(os.path.join(workdir, "checkpoints"))[1] == summary["step"] == max(_losses(workdir))


# ---------------------------------------------------------------- bad inputs of the data, units, eval and conversion tools

def _tool(name, *args, timeout=240):
  return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *args], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def test_extract_units_skips_and_reports_audio_shorter_than_one_frame(tmp_path):
  import numpy as np
  import soundfile as sf
  from slm_jax.units import extract
  from slm_jax.units.mfcc import MfccEncoder
  audio = tmp_path / "audio"
  audio.mkdir()
  rng = np.random.default_rng(0)
  for name, n in (("a.wav", 16000), ("b.wav", 12000), ("short.wav", 100)):
    sf.write(audio / name, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
  km = tmp_path / "km.npy"
  np.save(km, rng.standard_normal((8, MfccEncoder.dim)).astype(np.float32))
  out = tmp_path / "units.jsonl"
  r = _tool("extract_units.py", f"--audio_dir={audio}", "--ext=wav", f"--out={out}", f"--kmeans={km}")
  assert r.returncode == 0, r.stderr[-3000:]
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert sorted(os.path.basename(x["file_name"]) for x in records) == ["a.wav", "b.wav"]  # good ones all kept
  assert all(len(x["units"]) > 0 for x in records)
  assert "2 files written" in r.stdout and "1 skipped" in r.stdout
  assert f"skipped {audio / 'short.wav'}: 100 samples (0.0063 s) is shorter than one encoder frame" in r.stdout
  r = _tool("extract_units.py", f"--audio_dir={audio}", "--ext=wav", f"--out={tmp_path / 'strict.jsonl'}",
            f"--kmeans={km}", "--strict")
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert f"ERROR: {audio / 'short.wav'}: 100 samples" in r.stderr and "(--strict)" in r.stderr


def _text_input(path, lines):
  path.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
  return str(path)


def test_prepare_data_refuses_a_folder_and_an_empty_input_leaving_nothing(tmp_path):
  out = tmp_path / "out"
  r = _tool("prepare_data.py", "--kind=text", f"--input={tmp_path}", f"--out_dir={out}")
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert f"ERROR: --input {str(tmp_path)!r}: {tmp_path} is a folder; give files or a glob" in r.stderr
  assert not out.exists()
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  good = _text_input(tmp_path / "good.jsonl", ["one document", "another"])
  r = _tool("prepare_data.py", "--kind=text", f"--input={good},{empty}", f"--out_dir={out}")
  assert r.returncode == 2 and f"ERROR: {empty}: empty input file (1 of 2 inputs" in r.stderr, r.stderr[-3000:]
  assert "--allow_empty" in r.stderr and not out.exists()
  r = _tool("prepare_data.py", "--kind=text", f"--input={good},{empty}", f"--out_dir={out}", "--allow_empty",
            "--num_workers=1")
  assert r.returncode == 0 and "prepared 2 text documents" in r.stdout, r.stderr[-3000:]


def test_prepare_data_no_document_strict_failure_and_leftovers(tmp_path):
  from slm_jax.data import prepare, records, slamkit
  out = tmp_path / "out"
  cfg = lambda inputs, **kw: prepare.PrepareConfig(kind="text", inputs=inputs, out_dir=str(out), num_workers=1,
                                                   **kw)
  blank = _text_input(tmp_path / "blank.jsonl", ["", "  "])
  with pytest.raises(prepare.InputError, match=r"no document accepted from 1 input file\(s\) \(2 rejected; e\.g\. "):
    prepare.prepare(cfg([blank]), progress=False, log=lambda *_: None)
  assert not out.exists()  # no partial output
  bad = _text_input(tmp_path / "bad.jsonl", ["fine", "also fine", ""])
  with pytest.raises(slamkit.Rejected, match=r"bad\.jsonl:3: .*--strict"):
    prepare.prepare(cfg([bad], strict=True), progress=False, log=lambda *_: None)
  assert not out.exists()  # the temporary shards of the failed run are gone
  out.mkdir()  # a run killed mid-way left temporary shards (and no manifest): the next run removes them
  (out / ".tmp-train-00000").write_bytes(b"partial")
  (out / "notes.txt").write_text("the user's own file")
  manifest = prepare.prepare(cfg([bad]), progress=False, log=lambda *_: None)
  assert manifest["counts"]["documents"] == 2 and len(manifest["rejected"]) == 1
  names = sorted(os.listdir(out))
  assert "notes.txt" in names and not [n for n in names if n.startswith(".tmp-")]
  assert records.read_manifest(str(out))["counts"]["documents"] == 2
  with pytest.raises(FileExistsError, match="--overwrite"):  # a finished dataset is never replaced silently
    prepare.prepare(cfg([bad]), progress=False, log=lambda *_: None)


def test_conversion_removes_leftover_tmp_folders_of_killed_runs(tmp_path):
  from slm_jax.checkpoint.staging import staged_output
  gone = subprocess.Popen(["true"])
  gone.wait()
  out = str(tmp_path / "ckpt")
  host = socket.gethostname()
  dead = [f"{out}.tmp-{gone.pid}", f"{out}.tmp-{host}-{gone.pid}"]  # old and current naming
  live = [f"{out}.tmp-{host}-{os.getppid()}", f"{out}.tmp-otherhost-{gone.pid}"]
  for d in dead + live:
    os.makedirs(os.path.join(d, "params"))
  with staged_output(out) as tmp:
    with open(os.path.join(tmp, "x"), "w") as f:
      f.write("done")
  assert sorted(os.listdir(tmp_path)) == sorted(["ckpt"] + [os.path.basename(d) for d in live])
  with pytest.raises(RuntimeError):  # a failure inside removes its own temporary folder
    with staged_output(str(tmp_path / "other")):
      raise RuntimeError("conversion failed")
  assert not [n for n in os.listdir(tmp_path) if n.startswith("other")]


def test_hf_config_without_keys_names_the_file_and_the_keys(tmp_path):
  import numpy as np
  from safetensors.numpy import save_file
  from slm_jax.checkpoint.hf_source import open_hf
  from slm_jax.model.config import ModelConfig, preset
  d = preset("tiny-llama").to_hf_dict("float32")
  del d["hidden_size"], d["num_hidden_layers"]
  (tmp_path / "config.json").write_text(json.dumps(d))
  save_file({"model.embed_tokens.weight": np.zeros((4, 2), np.float32)}, str(tmp_path / "model.safetensors"))
  msg = f"{tmp_path / 'config.json'}: missing keys hidden_size, num_hidden_layers"
  with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
    ModelConfig.from_hf_dir(str(tmp_path))
  with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
    open_hf(str(tmp_path)).model_config()


def test_missing_gold_csv_is_named(tmp_path):
  import shutil
  from slm_jax.eval import benchmarks
  from slm_jax.eval.inputs import UnitsFile
  folder = tmp_path / "sblimp"
  folder.mkdir()
  shutil.copy(os.path.join(ROOT, "data", "demo", "eval", "sblimp", "units.jsonl"), folder / "units.jsonl")
  with pytest.raises(benchmarks.BenchmarkError, match=r"gold\.csv is missing \(looked in it, in dev/ and in "):
    benchmarks.load_benchmark("sblimp", str(folder), units=UnitsFile(str(folder / "units.jsonl")))
  r = _tool("evaluate.py", f"--ckpt={tmp_path / 'ckpt'}", "--benchmark=sblimp", f"--data_dir={folder}")
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
  assert f"error: {folder}: gold.csv is missing" in r.stderr
