# syntax=docker/dockerfile:1
#
# The sqla-audit consumer: SQS -> decode -> diff -> Cassandra.
# Configured by environment (SQLA_AUDIT_QUEUE_URL, SQLA_AUDIT_CASSANDRA_HOSTS, ...; see
# docs/consumer.md); AWS credentials come from the usual AWS_* variables or the task role.
#
#   docker build -t sqla-audit-consumer .
#   docker run --rm -e SQLA_AUDIT_QUEUE_URL=... -e SQLA_AUDIT_CASSANDRA_HOSTS=... sqla-audit-consumer
#
# README.md (Docker) has the commands the container test runs; scripts/container builds this
# image with podman from a local Debian base where no registry is reachable.
#
# Give the container a stop grace period longer than SQLA_AUDIT_SHUTDOWN_TIMEOUT (30 s by
# default), e.g. `docker stop -t 40` or `stop_grace_period: 40s`, so SIGTERM can finish the
# batches in flight.

# The base: Docker Hub's Python image by default. Any Debian-based image with Python >= 3.11 and
# its venv module works (python3 is called by that name, and nothing is installed into the
# system Python, which Debian's own packages protect, PEP 668): e.g. a local Debian bookworm
# image on machines without a registry, `--build-arg BASE_IMAGE=localhost/sqla-audit-base:bookworm`.
ARG BASE_IMAGE=python:3.11-slim

# --- build: a virtual environment with the package and its consumer dependencies ----------
FROM ${BASE_IMAGE} AS build

WORKDIR /src
# The dependencies first, in a layer of their own: rebuilt only when pyproject.toml changes, from
# pip's cache when it does. cassandra-driver comes as a wheel with its C extensions and libev
# included: no compiler is needed.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/sqla-audit \
    && python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["consumer"]))' >requirements.txt \
    && /opt/sqla-audit/bin/pip install --disable-pip-version-check -r requirements.txt
COPY README.md LICENSE ./
COPY sqla_audit ./sqla_audit
COPY consumer ./consumer
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/sqla-audit/bin/pip install --disable-pip-version-check --no-deps . \
    && /opt/sqla-audit/bin/sqla-audit --help >/dev/null

# --- runtime -------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

RUN useradd --system --uid 10001 --user-group --no-create-home \
        --shell /usr/sbin/nologin sqla-audit

COPY --from=build /opt/sqla-audit /opt/sqla-audit

ENV PATH=/opt/sqla-audit/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SQLA_AUDIT_LOG_FORMAT=json \
    SQLA_AUDIT_METRICS_HOST=0.0.0.0 \
    SQLA_AUDIT_METRICS_PORT=9108

USER 10001:10001
EXPOSE 9108
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['SQLA_AUDIT_METRICS_PORT'], timeout=3)"]

ENTRYPOINT ["sqla-audit", "consume"]
