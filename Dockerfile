# seqserve images (multi-stage).
#
#   docker build -t seqserve:latest .                                   # serve (default, CPU, no torch)
#   docker build -t seqserve:gpu --build-arg VARIANT=gpu .             # serve on onnxruntime-gpu
#   docker build -t seqserve-train:latest --target train .            # torch CPU, writes /models
#   docker build -t seqserve:baked --build-arg MODELS=model_repository .  # bake a repository in
#
# Dependencies are installed from a requirements list derived from pyproject.toml alone
# (service/deploy/requirements.py) before any code is copied, so a code change reuses that layer.
# Everything goes into a venv at /opt/venv: right for python:3.11-slim, and needed where the base
# is a Debian python (PEP 668 refuses system-wide pip installs).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# One unprivileged user for both targets (same uid, so they can share the /models volume).
RUN python3 -m venv /opt/venv \
    && groupadd --system --gid 10001 seqserve \
    && useradd --system --no-log-init --uid 10001 --gid seqserve \
        --home-dir /app --shell /usr/sbin/nologin seqserve \
    && mkdir -p /app /models \
    && chown seqserve:seqserve /app /models
WORKDIR /app

# ---------------------------------------------------------------------------------------------
# Serving dependencies only (cached layer: invalidated by pyproject.toml, not by code).
FROM base AS deps
# cpu: onnxruntime; gpu: onnxruntime-gpu + CUDA 12 / cuDNN 9 runtime wheels (host needs the driver).
ARG VARIANT=cpu
COPY pyproject.toml service/deploy/requirements.py /tmp/build/
RUN python /tmp/build/requirements.py --pyproject /tmp/build/pyproject.toml --variant "${VARIANT}" \
        > /tmp/build/requirements.txt \
    && pip install --no-cache-dir -r /tmp/build/requirements.txt

# ---------------------------------------------------------------------------------------------
# Training: torch CPU + the [train] extra. Writes versioned models into the /models volume that
# the serving containers read.
FROM deps AS train
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && python /tmp/build/requirements.py --pyproject /tmp/build/pyproject.toml --extra train \
        > /tmp/build/requirements-train.txt \
    && pip install --no-cache-dir -r /tmp/build/requirements-train.txt
COPY pyproject.toml README.md /tmp/src/
COPY models/ /tmp/src/models/
COPY training/ /tmp/src/training/
COPY service/ /tmp/src/service/
COPY seqserve/ /tmp/src/seqserve/
RUN pip install --no-cache-dir --no-deps /tmp/src && rm -rf /tmp/src
USER 10001:10001
VOLUME ["/models"]
ENTRYPOINT ["seqserve", "train"]
CMD ["--preset", "electricity", "--repository", "/models"]

# ---------------------------------------------------------------------------------------------
# Serving (default target): no torch.
# Neither training/ nor its datasets: the console script (seqserve/cli.py) loads training lazily.
FROM deps AS serve
COPY pyproject.toml README.md /tmp/src/
COPY models/ /tmp/src/models/
COPY service/ /tmp/src/service/
COPY seqserve/ /tmp/src/seqserve/
RUN pip install --no-cache-dir --no-deps /tmp/src \
    && rm -rf /tmp/src \
    && python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('torch', 'training')))"
COPY service/deploy/healthcheck.py /opt/seqserve/healthcheck.py
# A repository to bake in (path in the build context); the default is an empty placeholder and
# the real one is mounted at /models. A mounted volume hides whatever was baked.
ARG MODELS=service/deploy/models
COPY --chown=seqserve:seqserve ${MODELS} /models
# LD_LIBRARY_PATH: where the gpu variant's CUDA/cuDNN wheels keep their libraries (absent on cpu).
# Secure by default: listening on 0.0.0.0, the server refuses to start without SEQSERVE_API_KEYS
# (or _FILE) and SEQSERVE_ADMIN_KEY (or _FILE); see docs/deployment.md.
ENV SEQSERVE_HOST=0.0.0.0 \
    SEQSERVE_PORT=8000 \
    SEQSERVE_GRPC_PORT=8001 \
    SEQSERVE_ADMIN_PORT=8082 \
    SEQSERVE_MODEL_REPOSITORY=/models \
    SEQSERVE_SESSION_STORE=memory \
    SEQSERVE_WORKERS=1 \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cufft/lib:/opt/venv/lib/python3.11/site-packages/nvidia/curand/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib
USER 10001:10001
# 8000: data plane (HTTP), 8001: data plane (gRPC); 8082: admin API and /metrics (keep it internal).
EXPOSE 8000 8001 8082
VOLUME ["/models"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/seqserve/healthcheck.py"]
ENTRYPOINT ["seqserve", "serve"]
