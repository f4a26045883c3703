"""slm_jax: training and studying interleaved speech-text LMs in JAX/Flax.

Dependencies are compatible ranges (they hold for the versions in requirements.lock, which the tests run on, and
for a runtime's own jax / numpy, e.g. Colab's or a GPU node's): `pip install -c requirements.lock -e .[test]`
reproduces the tested set (tools/setup_env.sh does that). The tools in tools/ are also installed as the
`slm_jax_tools` package behind the `slm-*` console scripts (slm_jax/cli.py).
"""
from setuptools import find_packages, setup

JAX = ">=0.10.0,<0.12"
INSTALL_REQUIRES = [
    f"jax{JAX}", f"jaxlib{JAX}", "flax>=0.12.8,<0.14", "optax>=0.2.5,<0.3", "orbax-checkpoint>=0.12.8,<0.14",
    "grain>=0.2.15,<0.3", "array-record>=0.8,<0.9", "tensorstore>=0.1.80,<0.2", "transformers>=5.0,<6",
    "tokenizers>=0.22,<0.24", "safetensors>=0.5,<1", "librosa>=0.10.2,<0.12", "soundfile>=0.12,<0.15",
    "numpy>=2.0,<3", "ml-dtypes>=0.5,<0.8", "ml-collections>=1.0,<2", "tensorflow-datasets>=4.9.7,<5",
    "absl-py>=2.1,<3", "scipy>=1.13", "scikit-learn>=1.5", "tensorboardX>=2.6", "matplotlib>=3.8", "psutil>=5.9",
    "tqdm>=4.66",
]
TEST_REQUIRES = ["torch>=2.11,<3", "pytest", "pytest-xdist>=3.5", "hypothesis", "joblib", "gguf", "accelerate", "nbclient", "nbformat",
                 "ipykernel", "trl>=1.16,<2", "faster-whisper>=1.2.1,<2"]
EXTRAS = {
    "test": TEST_REQUIRES,
    "gpu": [f"jax[cuda12]{JAX}"],
    "tpu": [f"jax[tpu]{JAX}"],  # with requirements.lock: jax 0.10.2, libtpu 0.0.42.1
    "asr": ["faster-whisper>=1.2.1,<2"],
}
TOOLS = ["train", "evaluate", "generate", "prepare_data", "inspect_data", "extract_units", "convert_hf_to_orbax",
         "convert_orbax_to_hf", "fit_scaling", "aot_compile", "convert_vocoder", "vocode"]

setup(
    name="slm_jax",
    version="0.1.0",
    description="Interleaved speech-text language models in JAX/Flax (SIMS reimplementation)",
    license="Apache-2.0",
    packages=find_packages(include=["slm_jax", "slm_jax.*"]) + ["slm_jax_tools"],
    package_dir={"slm_jax_tools": "tools"},
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": [f"slm-{t.replace('_', '-')} = slm_jax.cli:{t}" for t in TOOLS]},
)
