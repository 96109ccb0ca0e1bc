# syntax=docker/dockerfile:1.7
#
# lookalike images. Pick one with --target:
#
#   runtime-gpu        CUDA 13 + cuDNN 9 runtime, onnxruntime-gpu; the model is mounted at /models
#   runtime-gpu-baked  runtime-gpu with the model exported at build time (MODEL_EXPORT_ARGS)
#   runtime-cpu        python:3.11-slim, same package (onnxruntime-gpu runs on CPU too); model mounted
#   runtime-cpu-baked  runtime-cpu with the model baked in
#   export             torch + transformers + onnx: `python -m models.export ...` writes /models/siglip.onnx
#
# No runtime image contains torch or transformers: only the `export` stage installs the [train] extra.
#
# Why CUDA 13.0 + cuDNN 9: onnxruntime-gpu wheels on PyPI are built against one CUDA major
# (1.19-1.2x: CUDA 12.x + cuDNN 9; 1.31 is built for CUDA 13.0 - its onnxruntime/capi/
# build_and_package_info.py says cuda_version = '13.0' and libonnxruntime_providers_cuda.so needs
# libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10 and cuDNN 9). CUDA minor versions
# are compatible within a major, cuDNN 8 and 9 are not. The `cudnn-runtime` flavour of nvidia/cuda
# carries exactly those libraries and no compiler. Hosts need an NVIDIA driver that supports CUDA 13
# (R580 or newer) and the NVIDIA container toolkit. When ONNXRUNTIME_GPU_VERSION moves to a release
# built for another CUDA major, CUDA_IMAGE must move with it.

ARG PYTHON_IMAGE=python:3.11.14-slim-trixie
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
# Keep equal to the torch pin of pyproject's [train] extra (tests/test_deploy.py checks it).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG APP_UID=10001

# ---------------------------------------------------------------- CPU: dependencies in a venv
FROM ${PYTHON_IMAGE} AS cpu-build
ARG ONNXRUNTIME_GPU_VERSION
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
RUN pip install "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" .

# ---------------------------------------------------------------- CPU runtime
FROM ${PYTHON_IMAGE} AS runtime-cpu
ARG APP_UID
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    LOOKALIKE_HOST=0.0.0.0 \
    LOOKALIKE_PORT=8000 \
    LOOKALIKE_MODEL_PATH=/models/siglip.onnx \
    LOOKALIKE_QDRANT_PATH=/data/qdrant
# /data belongs to the app user: the embedded store (/data/qdrant) and the kept photos (/data/images, the default
# LOOKALIKE_IMAGE_STORE_PATH: `images` next to QDRANT_PATH) are written there. Mount volumes at those paths to keep
# them: an empty named volume takes the folder's owner, so the non-root user can write it.
RUN groupadd --system --gid "${APP_UID}" lookalike \
    && useradd --system --uid "${APP_UID}" --gid "${APP_UID}" --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin lookalike \
    && mkdir -p /models /data/qdrant /data/images /srv/lookalike \
    && chown -R "${APP_UID}:${APP_UID}" /data
COPY --from=cpu-build /opt/venv /opt/venv
WORKDIR /srv/lookalike
USER ${APP_UID}:${APP_UID}
EXPOSE 8000
# No curl in slim images: the healthcheck is Python. urlopen raises (exit 1) on any non-2xx answer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LOOKALIKE_PORT', '8000') + '/healthz', timeout=4)"]
CMD ["python", "-m", "app"]

# ---------------------------------------------------------------- GPU: Python on the CUDA base
FROM ${CUDA_IMAGE} AS gpu-base
ENV DEBIAN_FRONTEND=noninteractive
# Ubuntu 24.04's python3 is 3.12 (pyproject: >=3.11,<3.13). apt versions are not pinned: the base
# image tag fixes the distribution release, and exact Debian revisions disappear with security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM gpu-base AS gpu-build
ARG ONNXRUNTIME_GPU_VERSION
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
# onnxruntime-gpu alone (no [cuda]/[cudnn] extras): CUDA and cuDNN come from the base image.
RUN pip install "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" .

# ---------------------------------------------------------------- GPU runtime
FROM gpu-base AS runtime-gpu
ARG APP_UID
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    LOOKALIKE_HOST=0.0.0.0 \
    LOOKALIKE_PORT=8000 \
    LOOKALIKE_MODEL_PATH=/models/siglip.onnx \
    LOOKALIKE_QDRANT_PATH=/data/qdrant
# /data belongs to the app user: the embedded store (/data/qdrant) and the kept photos (/data/images, the default
# LOOKALIKE_IMAGE_STORE_PATH: `images` next to QDRANT_PATH) are written there. Mount volumes at those paths to keep
# them: an empty named volume takes the folder's owner, so the non-root user can write it.
RUN groupadd --system --gid "${APP_UID}" lookalike \
    && useradd --system --uid "${APP_UID}" --gid "${APP_UID}" --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin lookalike \
    && mkdir -p /models /data/qdrant /data/images /srv/lookalike \
    && chown -R "${APP_UID}:${APP_UID}" /data
COPY --from=gpu-build /opt/venv /opt/venv
WORKDIR /srv/lookalike
USER ${APP_UID}:${APP_UID}
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LOOKALIKE_PORT', '8000') + '/healthz', timeout=4)"]
CMD ["python", "-m", "app"]

# ---------------------------------------------------------------- export (torch; never shipped)
FROM ${PYTHON_IMAGE} AS export
ARG APP_UID
ARG ONNXRUNTIME_GPU_VERSION
ARG TORCH_VERSION
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/tmp/huggingface
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The CPU build of torch: exporting needs no GPU, and the default wheel drags in gigabytes of CUDA.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY models ./models
# ".[train]" is this project (its pins live in pyproject.toml), not an unpinned index package.
# hadolint ignore=DL3013
RUN pip install "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" ".[train]"
RUN groupadd --system --gid "${APP_UID}" lookalike \
    && useradd --system --uid "${APP_UID}" --gid "${APP_UID}" --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin lookalike \
    && mkdir -p /models \
    && chown "${APP_UID}:${APP_UID}" /models
USER ${APP_UID}:${APP_UID}
# docker compose runs this stage once to fill the shared `models` volume; the command there adds the
# "skip if the file is already there" check. Default: the public SigLIP base checkpoint (needs hub access).
CMD ["python", "-m", "models.export", "--checkpoint", "google/siglip-base-patch16-224", "--out", "/models/siglip.onnx"]

# ---------------------------------------------------------------- baked model
FROM export AS model-build
# e.g. --build-arg MODEL_EXPORT_ARGS="--checkpoint google/siglip2-base-patch16-224"
#      --build-arg MODEL_EXPORT_ARGS="--config tiny"   (random weights: smoke tests only)
ARG MODEL_EXPORT_ARGS="--checkpoint google/siglip-base-patch16-224"
# Word splitting of MODEL_EXPORT_ARGS is intended: it holds several CLI arguments.
# hadolint ignore=SC2086
RUN python -m models.export ${MODEL_EXPORT_ARGS} --out /models/siglip.onnx

FROM runtime-gpu AS runtime-gpu-baked
COPY --from=model-build /models/siglip.onnx /models/siglip.onnx

FROM runtime-cpu AS runtime-cpu-baked
COPY --from=model-build /models/siglip.onnx /models/siglip.onnx

# The last stage is what a plain `docker build .` produces: the CPU image, which runs anywhere.
FROM runtime-cpu AS default
