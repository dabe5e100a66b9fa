# R Bridge: serve R models (.rds), and scikit-learn / ONNX models beside them, over REST.
#
#   docker build -t rbridge .
#   docker run -p 8000:8000 -v "$PWD/models:/models:ro" rbridge
#
# Debian bookworm's R 4.2.2 and r-cran-* packages are what the project is tested against.
# Add R packages your models need with
#   docker build --build-arg EXTRA_R_PACKAGES="r-cran-glmnet r-cran-earth" -t rbridge .
# (Debian package names; `apt-cache search r-cran-` lists them).

# ---------------------------------------------------------------------------
# builder: a venv at /opt/venv with rpy2 (which compiles against R's headers) and
# the bridge, installed from its wheel as a user installs it. Compilers and the
# source tree stay in this stage.
# ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS builder

ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv python3-dev r-base-dev libffi-dev \
 && rm -rf /var/lib/apt/lists/*

# pip trusts the system store (Mozilla's CAs plus any in /usr/local/share/ca-certificates
# of the base image, e.g. a corporate proxy's), not only its own bundle.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

WORKDIR /src
# Dependencies first (read from pyproject.toml, with the [r] extra: rpy2, and [python-models]:
# scikit-learn, onnxruntime, ... for .joblib/.pkl/.onnx models), so a code change does not
# rebuild rpy2.
COPY pyproject.toml /src/
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; x = p["optional-dependencies"]; print("\n".join(p["dependencies"] + x["r"] + x["python-models"]))' > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && python3 -c 'import rpy2.rinterface, sklearn, onnxruntime, joblib, PIL'

# GPU (deploy/overlays/aks-gpu): onnxruntime-gpu replaces onnxruntime (both provide the one
# module), with CUDA 12 and cuDNN 9 from PyPI through its [cuda,cudnn] extras:
#   docker build --build-arg ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]" -t rbridge:gpu .
# An ONNX model then runs on the GPU when its <name>.json lists "CUDAExecutionProvider" first.
ARG ONNXRUNTIME=""
# hadolint ignore=DL3013
RUN if [ -n "$ONNXRUNTIME" ]; then pip uninstall -y onnxruntime && pip install "$ONNXRUNTIME"; fi \
 && python3 -c 'import onnxruntime; print("onnxruntime providers:", onnxruntime.get_available_providers())'

# The bridge as a wheel (its R code and pages are package data), installed into the venv;
# the check fails the build if the wheel lost its R code.
COPY . /src
RUN pip wheel --no-deps -w /tmp/dist /src \
 && pip install --no-deps /tmp/dist/rbridge-*.whl \
 && python3 -c 'from rbridge.worker.rsession import R_DIR; assert sorted(R_DIR.glob("*.R")), R_DIR'

# ---------------------------------------------------------------------------
# final: R, Python and the venv (the bridge is in it); no compilers, no source tree.
# ---------------------------------------------------------------------------
FROM debian:bookworm-slim

# R packages the shipped example models need, and R's recommended packages (MASS, mgcv, nnet, survival,
# nlme, ...: r-recommended, which --no-install-recommends would leave out), so that a model from them
# loads in the image too; EXTRA_R_PACKAGES for your own models.
ARG R_PACKAGES="r-recommended r-cran-randomforest r-cran-ranger r-cran-gbm r-cran-e1071 r-cran-rpart"
ARG EXTRA_R_PACKAGES=""
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008,SC2086
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        ca-certificates python3 r-base-core tini $R_PACKAGES $EXTRA_R_PACKAGES \
 && rm -rf /var/lib/apt/lists/*

# Non-root user 10001:10001 (the Kubernetes manifests' runAsUser). /etc/rbridge is the
# users file's folder: the server creates users.json and initial-admin-password there
# when nothing is mounted over it.
RUN groupadd --system --gid 10001 rbridge \
 && useradd --system --uid 10001 --gid rbridge --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin rbridge \
 && install -d -o rbridge -g rbridge -m 0750 /etc/rbridge

COPY --from=builder /opt/venv /opt/venv
# Example models; mount your own folder over /models, or bake models into a derived image:
#   FROM rbridge
#   COPY my-models/ /models/
COPY models/ /models/

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    R_HOME=/usr/lib/R \
    TMPDIR=/tmp \
    RBRIDGE_HOST=0.0.0.0 \
    RBRIDGE_MODELS=/models \
    RBRIDGE_USERS=/etc/rbridge/users.json

USER 10001:10001
WORKDIR /
EXPOSE 8000

# Liveness of the gateway process (no curl in the image: Python's urllib).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, ssl, urllib.request as u; tls = bool(os.environ.get('RBRIDGE_CERTFILE')); u.urlopen('http%s://127.0.0.1:%s/healthz' % ('s' if tls else '', os.environ.get('RBRIDGE_PORT', '8000')), timeout=4, context=ssl._create_unverified_context())"]

# tini as PID 1 passes SIGTERM to the server (which drains in-flight requests and stops
# its R workers) and reaps zombies; the container's exit code is the server's.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["rbridge", "serve"]
