"""slm_jax: training and studying interleaved speech-text LMs in JAX/Flax (versions from ENV_NOTES, pinned)."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax==0.10.2", "jaxlib==0.10.2", "flax==0.12.8", "optax==0.2.8", "orbax-checkpoint==0.12.8",
    "grain==0.2.18", "array-record==0.8.6", "tensorstore==0.1.86", "transformers==5.24.0", "tokenizers==0.23.3",
    "safetensors==0.8.0", "librosa==0.11.0", "soundfile==0.14.0", "numpy==2.4.6", "ml-dtypes==0.6.0",
    "ml-collections==1.1.0", "tensorflow-datasets==4.9.10", "absl-py==2.5.1", "scipy", "scikit-learn",
    "tensorboardX", "matplotlib", "psutil", "tqdm",
]
TEST_REQUIRES = ["torch==2.13.0", "pytest", "hypothesis", "joblib", "gguf", "accelerate", "nbclient", "nbformat", "ipykernel"]

setup(
    name="slm_jax",
    version="0.1.0",
    description="Interleaved speech-text language models in JAX/Flax (SIMS reimplementation)",
    packages=find_packages(include=["slm_jax", "slm_jax.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "gpu": ["jax[cuda12]==0.10.2"]},
)
