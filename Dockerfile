# syntax=docker/dockerfile:1
# semantic-sidecar images. Not buildable on the development machines of this project (no Docker
# engine there): see README "Docker" for what was and was not validated.
#
#   docker build --target runtime-cpu -t semantic-sidecar:cpu .
#   docker build --target runtime-gpu -t semantic-sidecar:gpu .
#
# The model is not baked in: mount models/ (made by scripts/setup) at /app/models.

ARG RUST_VERSION=1.95
ARG ORT_VERSION=1.32.0
ARG ORT_WHEEL_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
ARG ORT_LIB_SHA256=6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f
ARG ORT_GPU_VERSION=1.31.1

# --- ONNX Runtime (CPU): the C-API library out of the PyPI wheel, hash-checked ---------------
FROM python:3.11-slim-bookworm AS ort-cpu
ARG ORT_VERSION
ARG ORT_WHEEL_SHA256
ARG ORT_LIB_SHA256
RUN apt-get update && apt-get install -y --no-install-recommends unzip && rm -rf /var/lib/apt/lists/*
WORKDIR /ort
RUN pip download --no-deps --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
      --platform manylinux_2_28_x86_64 "onnxruntime==${ORT_VERSION}" -d . \
 && echo "${ORT_WHEEL_SHA256}  $(ls onnxruntime-*.whl)" | sha256sum -c - \
 && unzip -q onnxruntime-*.whl "onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}" \
 && echo "${ORT_LIB_SHA256}  onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}" | sha256sum -c - \
 && mkdir -p /opt/ort && mv "onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}" /opt/ort/libonnxruntime.so

# --- ONNX Runtime (CUDA 13): onnxruntime-gpu with its CUDA/cuDNN wheels from PyPI -------------
FROM python:3.11-slim-bookworm AS ort-gpu
ARG ORT_GPU_VERSION
RUN pip install --no-cache-dir --target /opt/ort-gpu "onnxruntime-gpu[cuda,cudnn]==${ORT_GPU_VERSION}" \
 && ln -s "/opt/ort-gpu/onnxruntime/capi/libonnxruntime.so.${ORT_GPU_VERSION}" /opt/ort-gpu/libonnxruntime.so

# --- the sidecar binary ------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY config config
COPY src src
RUN cargo build --release --locked && strip target/release/semantic-sidecar

# --- runtime images ----------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime-base
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libstdc++6 curl \
 && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 sidecar
COPY --from=build /src/target/release/semantic-sidecar /usr/local/bin/semantic-sidecar
WORKDIR /app
ENV SIDECAR__SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
USER sidecar
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["semantic-sidecar"]
CMD ["serve"]

FROM runtime-base AS runtime-cpu
COPY --from=ort-cpu /opt/ort /opt/ort
ENV ORT_DYLIB_PATH=/opt/ort/libonnxruntime.so

FROM runtime-base AS runtime-gpu
COPY --from=ort-gpu /opt/ort-gpu /opt/ort-gpu
# The CUDA, cuBLAS, cuDNN, cuFFT, cuRAND and NVRTC libraries come from the nvidia-* wheels (their
# folder layout differs between CUDA releases, so the library path is found at start); the
# driver comes from the host through the NVIDIA container toolkit.
ENV ORT_DYLIB_PATH=/opt/ort-gpu/libonnxruntime.so
USER root
RUN printf '%s\n' '#!/bin/sh' \
      'LD_LIBRARY_PATH="$(find /opt/ort-gpu/nvidia /opt/ort-gpu/onnxruntime/capi -type d -name lib -o -type d -name capi | paste -sd: -)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"' \
      'export LD_LIBRARY_PATH' 'exec semantic-sidecar "$@"' >/usr/local/bin/sidecar-cuda \
 && chmod +x /usr/local/bin/sidecar-cuda
USER sidecar
ENTRYPOINT ["sidecar-cuda"]
