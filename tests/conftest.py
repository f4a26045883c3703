"""Test setup: 8 simulated CPU devices (before jax is imported), fp32 matmuls, shared fixtures, and under CI
(`CI=true`) every skip outside the opt-in slow tier turned into a failure with a one-line reason."""
import importlib.util
import os
import shutil
import tempfile

from xla_env import xla_flags  # noqa: E402

# LLVM at -O0 (xla_env.FAST_COMPILE): the same HLO optimisations and float semantics, about 30% less compile time
# for these small programs, whose run time is a fraction of their compile time; the tools the tests start get it
# too (xla_env.xla_flags)
os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # no TPU/GPU probing where libtpu is installed (AOT tests)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One persistent XLA compilation cache for this test run, shared by the pytest workers and the tools the tests
# start (they inherit the environment): the same small programs (a tiny model's train step, compiled again by
# each resumed or killed run) compile once. Entries are keyed by the program, compile options, XLA flags and
# jax version; the size limit turns on jax's file lock around reads and writes. Removed at the end of the run.
_CACHE_OWNER = "SLM_JAX_TEST_JIT_CACHE_OWNER"
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="slm_jax_test_jit_cache.")
  os.environ[_CACHE_OWNER] = str(os.getpid())
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402

from slm_jax import assets  # noqa: E402


# Under CI a skip is a failure (pytest_runtest_makereport / pytest_make_collect_report below): a missing asset, a
# missing optional test dependency (importorskip), a missing tool or libtpu must not leave the run green. Only the
# opt-in slow tier (marked `slow`, SLM_JAX_SLOW unset) may skip. Outside CI skips stay skips; `-rs` shows why.
CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
SLOW = os.environ.get("SLM_JAX_SLOW") == "1"
HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


def one_line(text, limit=480) -> str:
  """`text` on one line (whitespace runs collapsed), at most `limit` characters: its head (what failed) and its
  tail (a command's last error) when it is longer."""
  text = " ".join(str(text).split())
  if len(text) <= limit:
    return text
  head = limit // 2
  return f"{text[:head]} ... {text[-(limit - head - 5):]}"


def _fetch(fn):
  try:
    return fn()
  except assets.MaterialUnavailable as e:
    pytest.skip(one_line(f"test material unavailable (registry unreachable? empty asset cache "
                         f"{assets.cache_dir()}?): {e}"))


@pytest.fixture(scope="session")
def llama3_tokenizer_dir():
  return _fetch(assets.llama3_tokenizer_dir)


@pytest.fixture(scope="session")
def llama_bpe_golden():
  return _fetch(assets.llama_bpe_golden)


@pytest.fixture(scope="session")
def smollm2_dir():
  return _fetch(assets.smollm2_hf_dir)


@pytest.fixture(scope="session")
def librivox_dir():
  return _fetch(assets.pocketsphinx_librivox)


@pytest.fixture(scope="session")
def slamkit_example():
  return os.path.join(os.path.dirname(__file__), "data", "slamkit_example")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: heavy check, run only with SLM_JAX_SLOW=1")
  config.addinivalue_line("markers", "tpu: compiles for TPU topologies; needs libtpu (the .venv-tpu tier of "
                                     "tools/run_tests.sh)")


def pytest_unconfigure(config):
  if os.environ.get(_CACHE_OWNER) == str(os.getpid()):  # the process that made it (not a worker)
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  slow = pytest.mark.skip(reason="slow: set SLM_JAX_SLOW=1 to run")
  tpu = pytest.mark.skip(reason="needs libtpu: tools/run_tests.sh runs the tpu tests in .venv-tpu "
                                "(made by tools/setup_env.sh --tpu)")
  for item in items:
    if "slow" in item.keywords and not SLOW:
      item.add_marker(slow)
    if "tpu" in item.keywords and not HAS_LIBTPU:
      item.add_marker(tpu)


def _skip_allowed(item) -> bool:
  """Under CI only the opt-in slow tier may skip."""
  return not CI or ("slow" in item.keywords and not SLOW)


def _ci_failure(longrepr) -> str:
  reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)  # (path, line, "Skipped: why")
  return one_line(f"skipped under CI=true, which allows no skips outside the slow tier: "
                  f"{reason.removeprefix('Skipped: ')}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
  """Under CI a skipped phase (skip / skipif marker, pytest.skip, importorskip) is reported as failed."""
  rep = yield
  if rep.skipped and not hasattr(rep, "wasxfail") and not _skip_allowed(item):
    rep.outcome, rep.longrepr = "failed", _ci_failure(rep.longrepr)
  return rep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
  """Under CI a module that skips while it is collected (a module-level importorskip) is a collection error."""
  rep = yield
  if CI and rep.skipped:
    rep.outcome, rep.longrepr = "failed", _ci_failure(rep.longrepr)
  return rep


@pytest.fixture(scope="session")
def flite():
  """A flite TTS engine (slm_jax.demo.tts; installed where possible), or the test is skipped."""
  tts = pytest.importorskip("slm_jax.demo.tts")
  try:
    tts.ensure_flite()
    return tts.Flite()
  except tts.TTSUnavailable as e:
    pytest.skip(str(e))
