"""README.md's commands are correct: every `python tools/X.py` / `bash tools/...` command of its ```bash blocks
(run as written by tools/readme_walkthrough.py) and ```text templates names a script that exists, flags that the
tool defines (its own absl flags, shared ones of the slm_jax modules it imports, absl's built-ins), config
overrides that name keys of the named config, and known `asset:NAME`s. Fast: nothing is run but one `--list`."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

# absl's own flags (absl.flags / absl.logging / absl.app), accepted by every tool
ABSL_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok", "verbosity", "v", "logtostderr",
              "alsologtostderr", "log_dir", "stderrthreshold", "showprefixforinfo", "logger_levels", "only_check_args",
              "pdb_post_mortem", "pdb", "run_with_pdb", "run_with_profiling", "profile_file",
              "use_cprofile_for_profiling", "log_fn_name"}
# launch scripts hand their flags to tools/train.py (tools/launch/*)
LAUNCHERS = {"tools/launch/gpu_node.sh": "tools/train.py", "tools/launch/slurm_gpu.sbatch": "tools/train.py",
             "tools/launch/tpu_pod.sh": "tools/train.py"}


def fenced_blocks(text):
  """[(lang, first line number, [lines])] of the ``` blocks."""
  out, cur = [], None
  for n, line in enumerate(text.splitlines(), start=1):
    if cur is None:
      m = re.match(r"^```(\w*)\s*$", line)
      if m:
        cur = (m.group(1), n + 1, [])
    elif line.startswith("```"):
      out.append(cur)
      cur = None
    else:
      cur[2].append(line)
  assert cur is None, f"README.md: ``` block from line {cur[1] - 1} is not closed"
  return out


def block_commands(lines, first):
  """[(line number, command)]: comment lines dropped, ` # ...` tails dropped, `\\` continuations joined."""
  out, pending, start = [], "", None
  for i, line in enumerate(lines):
    if not pending and (not line.strip() or line.lstrip().startswith("#")):
      continue
    body = re.sub(r"\s+#\s.*$", "", line).strip()  # a trailing ` # comment`
    start = first + i if not pending else start
    if body.endswith("\\"):
      pending += body[:-1].strip() + " "
      continue
    out.append((start, (pending + body).strip()))
    pending = ""
  return out


def readme_commands(langs=("bash", "text")):
  text = open(README, encoding="utf-8").read()
  return [(lang, n, cmd) for lang, first, lines in fenced_blocks(text) if lang in langs
          for n, cmd in block_commands(lines, first)]


def tool_invocation(cmd):
  """(script path, the command text after it) for `python tools/X.py ...`, `bash tools/...`, `sbatch ... tools/...`."""
  m = re.search(r"(?:^|\s)(?:python3?|\S*/python3?|bash|sbatch(?:\s+--\S+)*)\s+(tools/\S+)(.*)$", cmd)
  return (m.group(1), m.group(2)) if m else (None, None)


def module_file(name):
  base = os.path.join(ROOT, *name.split("."))
  for f in (base + ".py", os.path.join(base, "__init__.py")):
    if os.path.isfile(f):
      return f
  return None


def slm_jax_imports(path):
  """slm_jax module files imported by the file at `path` (anywhere in it, functions included)."""
  src = open(path, encoding="utf-8").read()
  out = set()
  for pkg, names in re.findall(r"^\s*from\s+(slm_jax(?:\.\w+)*)\s+import\s+(\([^)]*\)|[^\n]*)", src, re.M):
    names = re.sub(r"#[^\n]*", "", names).strip("()")  # one line, or a parenthesised list over several
    for name in [n.strip().split(" as ")[0] for n in names.replace("\n", " ").split(",") if n.strip()]:
      out.add(module_file(f"{pkg}.{name}") or module_file(pkg))
  for pkg in re.findall(r"^\s*import\s+(slm_jax(?:\.\w+)*)", src, re.M):
    out.add(module_file(pkg))
  return {f for f in out if f}


def defined_flags(script):
  """Flags of a tool: its DEFINE_*("name" ...) and those of every slm_jax module it reaches by imports."""
  seen, todo, names, config_flags = set(), [os.path.join(ROOT, script)], set(), set()
  while todo:
    f = todo.pop()
    if f in seen:
      continue
    seen.add(f)
    src = open(f, encoding="utf-8").read()
    for kind, name in re.findall(r"DEFINE_(\w+)\(\s*[\"'](\w+)[\"']", src):
      names.add(name)
      if kind == "bool":
        names.add("no" + name)
      if kind.startswith("config"):
        config_flags.add(name)
    todo.extend(slm_jax_imports(f) - seen)
  return names, config_flags


def load_config(spec):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("readme_config_" + re.sub(r"\W", "_", path),
                                                       os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def has_key(cfg, dotted):
  node = cfg
  for part in dotted.split("."):
    try:
      if part not in node:
        return False
    except TypeError:  # a leaf value
      return False
    node = node[part]
  return True


def check_command(cmd, where="README.md"):
  """Problems of one command (empty: fine)."""
  problems = []
  script, rest = tool_invocation(cmd)
  if script is None:
    return problems
  if not os.path.isfile(os.path.join(ROOT, script)):
    return [f"{where}: {script} does not exist"]
  target = LAUNCHERS.get(script, script)
  if not target.endswith(".py"):
    return problems
  names, config_flags = defined_flags(target)
  flags = re.findall(r"(?:^|[\s\[|])--([A-Za-z_][\w.]*)(?:=(\S*))?", rest)
  configs = {name: value.strip("'\"") for name, value in flags if name in config_flags and value}
  for name, value in flags:
    head = name.split(".")[0]
    if "." in name and head in config_flags:
      if head not in configs:
        problems.append(f"{where}: --{name} without --{head}=FILE")
        continue
      cfg_file = configs[head].partition(":")[0]
      if not os.path.isfile(os.path.join(ROOT, cfg_file)):
        problems.append(f"{where}: --{head}={configs[head]}: no file {cfg_file}")
        continue
      key = name[len(head) + 1:]
      if not has_key(load_config(configs[head]), key):
        problems.append(f"{where}: --{name}: {configs[head]} has no key {key!r}")
    elif name not in names and name not in ABSL_FLAGS:
      problems.append(f"{where}: {target} defines no flag --{name}")
    elif name in config_flags and value:
      cfg_file = value.strip("'\"").partition(":")[0]
      if not os.path.isfile(os.path.join(ROOT, cfg_file)):
        problems.append(f"{where}: --{name}={value}: no file {cfg_file}")
  return problems


COMMANDS = readme_commands()


def test_readme_has_runnable_and_template_commands():
  langs = {lang for lang, _, _ in COMMANDS}
  assert langs == {"bash", "text"}, langs
  tools = {tool_invocation(c)[0] for _, _, c in COMMANDS}
  for t in ("tools/launch/demo.sh", "tools/run_tests.sh", "tools/train.py", "tools/evaluate.py", "tools/generate.py",
            "tools/prepare_data.py", "tools/extract_units.py", "tools/convert_hf_to_orbax.py", "tools/aot_compile.py"):
    assert t in tools, t


@pytest.mark.parametrize("lang,line,cmd", COMMANDS, ids=[f"{lang}:{n}" for lang, n, _ in COMMANDS])
def test_readme_command_is_correct(lang, line, cmd):
  assert check_command(cmd, f"README.md line {line} ({lang})") == []
  if lang == "bash":  # runnable as written: no <...> placeholder
    assert not re.search(r"<[A-Za-z_][^>]*>", cmd), f"README.md line {line}: placeholder in a bash block: {cmd}"
  from slm_jax import assets
  for name in re.findall(r"asset:([\w.-]+)", cmd):
    assert name in assets.NAMED, f"README.md line {line}: unknown asset:{name}"


def test_checker_catches_wrong_flags_keys_and_scripts():
  """The checks above would fail on a README with a mistake (so they are not vacuous)."""
  ok = "python tools/train.py --config=configs/demo.py --workdir=w --config.total_steps=4 --verbosity=1 --noprogress"
  assert check_command(ok) == []
  assert check_command(ok + " --work_dir=x") == ["README.md: tools/train.py defines no flag --work_dir"]
  assert check_command(ok + " --config.total_stepz=4") == ["README.md: --config.total_stepz: configs/demo.py has no "
                                                           "key 'total_stepz'"]
  assert check_command(ok + " --config.optim.lr.x=1")  # a leaf has no sub-keys
  assert check_command("python tools/trian.py --x=1") == ["README.md: tools/trian.py does not exist"]
  assert check_command("bash tools/launch/gpu_node.sh --config=configs/demo.py --workdirr=w") == \
      ["README.md: tools/train.py defines no flag --workdirr"]
  assert check_command("python tools/evaluate.py --ckpt=c --benchmark=tsc --progress=false") == []  # console.py's flag
  assert check_command("python tools/aot_compile.py --config=configs/nope.py --cpu_devices=2")


def test_walkthrough_lists_the_bash_commands_in_order():
  """tools/readme_walkthrough.py (its own parser) runs exactly this test's ```bash commands, in order."""
  out = subprocess.run([sys.executable, "tools/readme_walkthrough.py", "--list"], cwd=ROOT, check=True,
                       capture_output=True, text=True).stdout
  listed = [re.sub(r"^\s*\d+\s\s", "", line) for line in out.splitlines() if line.strip()]
  assert listed == [cmd for lang, _, cmd in COMMANDS if lang == "bash"]
  skipped = subprocess.run([sys.executable, "tools/readme_walkthrough.py", "--list", "--skip_quickstart"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout
  assert "tools/launch/demo.sh" not in skipped and "tools/run_tests.sh" not in skipped
  assert len(skipped.splitlines()) == len(listed) - 2


@pytest.mark.parametrize("args", [
    ["tools/convert_hf_to_orbax.py", "--hf_dir=asset:no-such-model", "--out_dir=unused"],
    ["tools/convert_hf_to_orbax.py", "--hf_dir=unused", "--tokenizer_dir=asset:no-such-model", "--out_dir=unused"],
    ["tools/evaluate.py", "--benchmark=genppl", "--ckpt=asset:no-such-model", "--transcripts=unused"],
    ["tools/evaluate.py", "--benchmark=genppl", "--ckpt=unused", "--judge=asset:no-such-model", "--transcripts=x"],
    ["tools/evaluate.py", "--benchmark=genppl", "--ckpt=unused", "--asr=asset:no-such-model", "--transcripts=x"],
    ["tools/extract_units.py", "--audio_dir=asset:no-such-model", "--out=unused.jsonl"],
], ids=["convert_hf_dir", "convert_tokenizer_dir", "evaluate_ckpt", "evaluate_judge", "evaluate_asr", "extract_audio"])
def test_asset_flags_go_through_assets_resolve(args, tmp_path):
  """The flags README gives `asset:NAME` read it through slm_jax.assets.resolve (an unknown name is reported as such,
  listing the known ones, before any other work)."""
  p = subprocess.run([sys.executable, os.path.join(ROOT, args[0]), *args[1:]], cwd=tmp_path, capture_output=True,
                     text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
  assert p.returncode != 0
  assert "unknown asset 'asset:no-such-model'" in p.stderr and "asset:smollm2" in p.stderr, p.stderr[-2000:]
  assert not os.listdir(tmp_path)
