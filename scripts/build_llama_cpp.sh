#!/usr/bin/env bash
# Build llama-cpp-python (llama.cpp's Python binding and OpenAI-compatible server)
# once, cache the wheel, and install it with its server extras into the venv.
#
# It ships only as source. A native build (-march=native) dies with "Illegal
# instruction" on the CI CPUs, so the SIMD level is fixed: AVX2 + FMA + F16C.
# The build takes about 9 minutes on 2 cores; the wheel is cached in
# ${GECKO_WHEEL_CACHE:-~/.cache/gecko_jax/wheels}/<flags hash>/ and reused.
#
# Usage: bash scripts/build_llama_cpp.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${1:-.venv/bin/python}
VERSION=0.3.36
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

flags_hash=$(printf '%s %s' "$VERSION" "$CMAKE_ARGS" | sha256sum | cut -c1-12)
cache=${GECKO_WHEEL_CACHE:-$HOME/.cache/gecko_jax/wheels}/llama-cpp-$flags_hash
mkdir -p "$cache"

if ! ls "$cache"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python==$VERSION ($CMAKE_ARGS) into $cache" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip wheel --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -w "$tmp"
  mv "$tmp"/llama_cpp_python-"$VERSION"-*.whl "$cache"/
else
  echo "reusing cached wheel in $cache" >&2
fi

# The server extras are pinned in requirements/constraints.txt (setup.py extra `server`).
"$PY" -m pip install -q -c requirements/constraints.txt \
  --find-links "$cache" --only-binary llama-cpp-python \
  "llama-cpp-python[server]==$VERSION"
"$PY" -c "import llama_cpp, llama_cpp.server; print('llama_cpp', llama_cpp.__version__)"
