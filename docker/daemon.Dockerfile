# The `prov daemon` image: the spot interruption handler (docs/daemon.md, "Deploying it").
#
#   docker build -f docker/daemon.Dockerfile -t prov-daemon .      # from the repository root
#   docker run -e PROV_QUEUE_URL=https://sqs.../prov-interruptions prov-daemon
#
# Only the `daemon` extra is installed (APScheduler, boto3, kubernetes, prometheus-client): no
# pandas, Pulumi or notebook stack. The base is pinned to a patch release; a release pipeline
# should also pin its digest (python:3.11.12-slim-bookworm@sha256:...) once it can resolve it.
FROM python:3.11.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROV_METRICS_PORT=9092

# What setuptools needs to build the package: its metadata, the readme it names, the packages.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY provisioner ./provisioner
COPY pricing ./pricing
COPY stacks ./stacks
RUN pip install ".[daemon]" \
    && cd / && rm -rf /src \
    && groupadd --system --gid 65532 prov \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin prov

# Not root; the same uid as the manifests' securityContext (runAsUser 65532, read-only root).
WORKDIR /
USER 65532:65532

# /metrics and /healthz (--metrics-port reads PROV_METRICS_PORT). Kubernetes ignores
# HEALTHCHECK and uses the manifests' probes on the same path; plain `docker run` uses this.
EXPOSE 9092
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PROV_METRICS_PORT', '9092') + '/healthz', timeout=4)"]

ENTRYPOINT ["prov", "daemon"]
CMD ["--mode", "queue"]
