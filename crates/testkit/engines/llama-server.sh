#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (from the sources inside PyPI's
# llama-cpp-python sdist) and a tiny random-weight model, once per machine,
# into a cache outside the clone. Prints the cache directory, which holds
# bin/llama-server and tiny.gguf.
#
#   crates/testkit/engines/llama-server.sh            # build if missing
#   BATCHKIT_LLAMA_CACHE=/somewhere ...               # another cache
#
# Needs: python3 (3.9+), a C++ compiler; cmake and ninja come from PyPI
# into the cache's own venv, with the gguf package of the same sdist. About
# 10-15 minutes on two cores.
set -euo pipefail

VERSION=0.3.36
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${BATCHKIT_LLAMA_CACHE:-${HOME}/.cache/batchkit/llama-server-${VERSION}}"
if [ -x "$CACHE/bin/llama-server" ] && [ -f "$CACHE/tiny.gguf" ]; then
  echo "$CACHE"
  exit 0
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ -x "$CACHE/bin/llama-server" ] && [ -f "$CACHE/tiny.gguf" ]; then
  echo "$CACHE"
  exit 0
fi

log() { echo "llama-server.sh: $*" >&2; }

if [ ! -x "$CACHE/venv/bin/python" ]; then
  log "making a venv with cmake and ninja"
  python3 -m venv "$CACHE/venv"
  "$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check \
    "cmake>=3.24,<4.3" "ninja>=1.11" "numpy>=1.26,<3" >&2
fi
PY="$CACHE/venv/bin/python"

SRC="$CACHE/src/llama_cpp_python-${VERSION}"
if [ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]; then
  log "downloading the llama-cpp-python ${VERSION} sdist"
  mkdir -p "$CACHE/src"
  "$CACHE/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --no-binary llama-cpp-python "llama-cpp-python==${VERSION}" -d "$CACHE/src" >&2
  tar xzf "$CACHE/src/llama_cpp_python-${VERSION}.tar.gz" -C "$CACHE/src"
fi
if ! "$PY" -c "import gguf" 2>/dev/null; then
  "$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check "$SRC/vendor/llama.cpp/gguf-py" >&2
fi

if [ ! -x "$CACHE/bin/llama-server" ]; then
  log "building llama-server (static, no CURL or OpenSSL; about 10-15 minutes on two cores)"
  PATH="$CACHE/venv/bin:$PATH"
  cmake -S "$SRC/vendor/llama.cpp" -B "$CACHE/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF >&2
  cmake --build "$CACHE/build" --target llama-server -j "$(nproc)" >&2
  mkdir -p "$CACHE/bin"
  cp "$CACHE/build/bin/llama-server" "$CACHE/bin/llama-server.tmp"
  mv "$CACHE/bin/llama-server.tmp" "$CACHE/bin/llama-server"
fi

if [ ! -f "$CACHE/tiny.gguf" ]; then
  log "making a tiny random-weight model"
  "$PY" "$HERE/tiny-model.py" --vocab "$SRC/vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf" \
    --out "$CACHE/tiny.gguf.tmp" >&2
  mv "$CACHE/tiny.gguf.tmp" "$CACHE/tiny.gguf"
fi
echo "$CACHE"
