"""Runs every ```bash command of README.md in document order and times each: the README's own check.

  python tools/readme_walkthrough.py [--repo=.] [--skip_quickstart] [--start_at=N] [--list] [--json_out=FILE]

Commands are the lines of the README's ```bash blocks with `\\` continuations joined and comment lines (and
trailing `# ...` comments) dropped; ```text blocks are templates for the user's own files and are not run. Each
command runs with bash in --repo (default: the current folder) with <repo>/.venv/bin first on PATH, so `python`
is the venv's. Prints each command's wall time and status, stops at the first failure (printing the tail of its
output), and ends with a summary table and one JSON line. --skip_quickstart leaves out the "Quick start" section's
first block (`bash tools/launch/demo.sh`, `bash tools/run_tests.sh`), e.g. when demo.sh has just been run.
"""
import json
import os
import re
import subprocess
import sys
import time

from absl import app, flags

_REPO = flags.DEFINE_string("repo", ".", "Repository root (README.md, .venv/).")
_README = flags.DEFINE_string("readme", "README.md", "README file, relative to --repo.")
_SKIP_QS = flags.DEFINE_bool("skip_quickstart", False, "Do not run the Quick start section's first bash block.")
_START = flags.DEFINE_integer("start_at", 1, "Run from this command number on (1-based, as --list numbers them).")
_LIST = flags.DEFINE_bool("list", False, "Only list the commands, numbered.")
_TAIL = flags.DEFINE_integer("tail_lines", 60, "Output lines shown for a failed command.")
_TIMEOUT = flags.DEFINE_float("timeout_s", 3600.0, "Per-command time limit (seconds).")
_JSON = flags.DEFINE_string("json_out", None, "Also write the summary (commands, seconds, status) to this JSON file.")


def strip_comment(line: str) -> str:
  """`line` without a trailing ` # comment` (a `#` outside quotes that starts a word)."""
  quote = None
  for i, ch in enumerate(line):
    if quote:
      if ch == quote:
        quote = None
    elif ch in "'\"":
      quote = ch
    elif ch == "#" and (i == 0 or line[i - 1].isspace()):
      return line[:i].rstrip()
  return line.rstrip()


def blocks(text: str) -> list[dict]:
  """Fenced blocks of a Markdown text, in order: {lang, section (the last `## ` heading), lines, first_line}."""
  out, section, cur = [], "", None
  for n, line in enumerate(text.splitlines(), start=1):
    if cur is None:
      if line.startswith("## "):
        section = line[3:].strip()
      m = re.match(r"^```(\w*)\s*$", line)
      if m:
        cur = {"lang": m.group(1), "section": section, "lines": [], "first_line": n + 1}
    elif line.startswith("```"):
      out.append(cur)
      cur = None
    else:
      cur["lines"].append(line)
  if cur is not None:
    raise ValueError(f"unterminated ``` block starting at line {cur['first_line'] - 1}")
  return out


def commands(block_lines: list[str]) -> list[str]:
  """The commands of one block: comment lines skipped, trailing comments dropped, `\\` continuations joined."""
  cmds, pending = [], ""
  for line in block_lines:
    if not pending and (not line.strip() or line.lstrip().startswith("#")):
      continue
    body = strip_comment(line)
    if body.endswith("\\"):
      pending += body[:-1].strip() + " "
      continue
    cmd = (pending + body.strip()).strip()
    pending = ""
    if cmd:
      cmds.append(cmd)
  if pending.strip():
    cmds.append(pending.strip())
  return cmds


def readme_commands(text: str, skip_quickstart: bool = False) -> list[str]:
  """Every runnable (```bash) command of the README in order."""
  out, skipped = [], False
  for b in blocks(text):
    if b["lang"] != "bash":
      continue
    if skip_quickstart and not skipped and b["section"] == "Quick start":
      skipped = True
      continue
    out.extend(commands(b["lines"]))
  return out


def main(argv):
  del argv
  repo = os.path.abspath(_REPO.value)
  with open(os.path.join(repo, _README.value), encoding="utf-8") as f:
    cmds = readme_commands(f.read(), _SKIP_QS.value)
  if _LIST.value:
    for i, c in enumerate(cmds, start=1):
      print(f"{i:3d}  {c}")
    return
  env = dict(os.environ)
  venv_bin = os.path.join(repo, ".venv", "bin")
  env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
  env["VIRTUAL_ENV"] = os.path.join(repo, ".venv")
  results, failed = [], False
  t_all = time.time()
  for i, cmd in enumerate(cmds, start=1):
    if i < _START.value:
      continue
    print(f"[{i}/{len(cmds)}] $ {cmd}", flush=True)
    t0 = time.time()
    try:
      p = subprocess.run(["bash", "-c", cmd], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=_TIMEOUT.value)
      rc, output = p.returncode, p.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
      rc, output = "timeout", (e.stdout or b"").decode(errors="replace")
    dt = time.time() - t0
    status = "ok" if rc == 0 else f"FAILED (exit {rc})"
    results.append({"n": i, "command": cmd, "seconds": round(dt, 1), "status": status})
    print(f"[{i}/{len(cmds)}] {status} in {dt:.1f} s", flush=True)
    if rc != 0:
      print("---- last output lines ----\n" + "\n".join(output.splitlines()[-_TAIL.value:]), flush=True)
      failed = True
      break
  total = time.time() - t_all
  print("\n  n  seconds  status  command")
  for r in results:
    short = r["command"] if len(r["command"]) <= 90 else r["command"][:87] + "..."
    print(f"{r['n']:3d}  {r['seconds']:7.1f}  {r['status']:6s}  {short}")
  summary = {"commands": len(cmds), "ran": len(results), "passed": sum(r["status"] == "ok" for r in results),
             "failed": failed, "total_seconds": round(total, 1), "results": results}
  print(f"{summary['passed']}/{len(cmds)} commands passed, {total:.1f} s in all" + (" (stopped at a failure)"
                                                                                   if failed else ""))
  print(json.dumps({k: v for k, v in summary.items() if k != "results"}))
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=1)
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  app.run(main)
