"""slm_jax.jsonl: records with their line numbers; errors name the file and the line."""
import pytest

from slm_jax.jsonl import iter_records


def test_records_skip_blank_lines_and_keep_line_numbers(tmp_path):
  p = tmp_path / "a.jsonl"
  p.write_text('{"x": 1}\n\n  \n{"x": 2}\n')
  assert list(iter_records(str(p))) == [(1, {"x": 1}), (4, {"x": 2})]


def test_bad_line_and_missing_file_are_named(tmp_path):
  p = tmp_path / "b.jsonl"
  p.write_text('{"x": 1}\n{"x": \n')

  class MyError(ValueError):
    pass

  with pytest.raises(MyError, match=r"b\.jsonl line 2: not JSON"):
    list(iter_records(str(p), MyError))
  with pytest.raises(FileNotFoundError, match="units file .*nope.jsonl does not exist"):
    list(iter_records(str(tmp_path / "nope.jsonl"), what="units file"))
