"""Console scripts (`slm-train`, `slm-evaluate`, ...): each runs its tools/ script as `__main__`.

setup.py installs tools/*.py as the `slm_jax_tools` package (editable and wheel installs alike), so
`slm-train ARGS` is `python tools/train.py ARGS`.
"""
import functools
import runpy


def _run(tool: str):
  runpy.run_module(f"slm_jax_tools.{tool}", run_name="__main__", alter_sys=True)


train = functools.partial(_run, "train")
evaluate = functools.partial(_run, "evaluate")
generate = functools.partial(_run, "generate")
prepare_data = functools.partial(_run, "prepare_data")
inspect_data = functools.partial(_run, "inspect_data")
extract_units = functools.partial(_run, "extract_units")
convert_hf_to_orbax = functools.partial(_run, "convert_hf_to_orbax")
convert_orbax_to_hf = functools.partial(_run, "convert_orbax_to_hf")
fit_scaling = functools.partial(_run, "fit_scaling")
aot_compile = functools.partial(_run, "aot_compile")
convert_vocoder = functools.partial(_run, "convert_vocoder")
vocode = functools.partial(_run, "vocode")
