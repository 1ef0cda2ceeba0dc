"""gecko_jax: distil compact text embedders from LLMs (the Gecko recipe) in JAX."""

from setuptools import find_packages, setup

# Versions checked to install together on Python 3.11 (see ../shared/ASSETS.md).
# Transitive versions are frozen in requirements/constraints.txt.
CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "gin-config==0.5.0",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "importlib_resources==6.5.2",  # tfds builders defined in packages need it (etils[epath])
    "sentencepiece==0.2.1",
    "grain==0.2.18",
    "clu==0.0.12",
    "tensorboard==2.21.0",  # clu metric writers import it
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "numpy==2.4.6",
    "tqdm==4.70.1",
    "gguf==0.19.0",
    "requests==2.34.2",
    "scikit-learn==1.9.1",
    "matplotlib==3.11.2",
    # oneDNN (OpenMP build) and its headers: gecko_jax/kernels/onednn.py compiles its
    # bf16 matmul custom call against them on first use (x86-64 Linux only; elsewhere
    # the bf16 option uses XLA's own dots).
    "onednn-cpu-gomp==2023.2.0; platform_machine == 'x86_64' and sys_platform == 'linux'",
    "onednn-devel-cpu-gomp==2023.2.0; platform_machine == 'x86_64' and sys_platform == 'linux'",
]

# Evaluation: the MTEB harness (pulls torch: install the CPU torch pin first) and
# pytrec_eval (mteb's own retrieval scorer; our metrics are checked against it).
EVAL = [
    "mteb==2.26.24",
    "pytrec_eval-terrier==0.5.11",
    "datasets==5.2.0",
    "pandas==3.1.1",
    "polars==2.1.0",
]

# llama.cpp's OpenAI-compatible server, the real peer of the OpenAI-compatible
# teacher backend (integration test, bench/llm.py). Source-only: install it with
# scripts/build_llama_cpp.sh (fixed SIMD flags; a native build crashes here).
SERVER = [
    "llama-cpp-python[server]==0.3.36",
    "uvicorn==0.54.0",
    "fastapi==0.165.0",
    "pydantic-settings==2.16.3",
    "sse-starlette==3.7.0",
    "starlette-context==0.3.6",
    "PyYAML==6.0.4",
]

# Apache Beam runner for FRet (gecko_jax/fret/beam.py). apache-beam 2.77.0 needs
# protobuf<7, pyarrow<26, pillow<13 and python-dateutil<3; every other package here
# accepts those older releases (tensorflow: protobuf>=6.31.1), so
# requirements/constraints.txt pins protobuf 6.33.6, pyarrow 25.0.1, pillow 12.3.0
# and python-dateutil 2.9.0.post0, and the Beam tests run in the default suite.
BEAM = ["apache-beam==2.77.0"]

EXTRAS = {
    "eval": EVAL,
    "beam": BEAM,
    "server": SERVER,
    # Reference implementations for numerics tests and the bench/ peers.
    # torch==2.13.0 is the CPU build that lies on this machine's disk.
    "dev": [
        "pytest==9.2.0",
        "pytest-timeout==2.4.0",
        "torch==2.13.0",
        "transformers==5.24.0",
        "sentence-transformers==6.2.0",
        "accelerate==1.15.0",
        # bench/encode.py's ONNX Runtime peer: the MiniLM exported with torch.onnx (the
        # TorchScript exporter needs onnx). sentence-transformers' backend="onnx" goes
        # through optimum-onnx, whose newest release (0.1.0) needs transformers<4.58.
        "onnx==1.23.2",
        "onnxruntime==1.31.1",
        # bench/knn.py peer (exact inner-product search).
        "faiss-cpu==1.15.1",
        # tests/test_notebooks.py executes notebooks/ with a real kernel.
        "nbclient==0.11.0",
        "nbformat==5.11.1",
        "ipykernel==7.4.0",
        *EVAL,
        *BEAM,
    ],
}

setup(
    name="gecko_jax",
    version="0.1.0",
    description=__doc__,
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["gecko_jax", "gecko_jax.*"]),
    # Everything the commands read at run time, found through importlib.resources:
    # the gin configs, the FRet prompts and the oneDNN kernels' sources (built on
    # first use, kernels/onednn.py).
    package_data={"gecko_jax": ["py.typed", "gin_configs/*/*.gin", "fret/prompt_files/*.json",
                                "kernels/*.cc", "kernels/*.h"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["gecko=gecko_jax.cli:main"]},
)
