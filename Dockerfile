# syntax=docker/dockerfile:1
#
# The sqla-audit consumer: SQS -> decode -> diff -> Cassandra.
# Configured by environment (SQLA_AUDIT_QUEUE_URL, SQLA_AUDIT_CASSANDRA_HOSTS, ...; see
# docs/consumer.md); AWS credentials come from the usual AWS_* variables or the task role.
#
#   docker build -t sqla-audit-consumer .
#   docker run --rm -e SQLA_AUDIT_QUEUE_URL=... -e SQLA_AUDIT_CASSANDRA_HOSTS=... sqla-audit-consumer
#
# Give the container a stop grace period longer than SQLA_AUDIT_SHUTDOWN_TIMEOUT (30 s by
# default), e.g. `docker stop -t 40` or `stop_grace_period: 40s`, so SIGTERM can finish the
# batches in flight.

ARG PYTHON_VERSION=3.11

# --- build: wheels for the package and its consumer dependencies --------------------------
FROM python:${PYTHON_VERSION}-slim AS build

# cassandra-driver compiles its C extensions (libev reactor) when no wheel matches.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libev-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sqla_audit ./sqla_audit
COPY consumer ./consumer
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[consumer]"

# --- runtime -------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libev4 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home \
        --shell /usr/sbin/nologin sqla-audit

COPY --from=build /wheels /wheels
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-index --find-links=/wheels "sqla-audit[consumer]" \
    && rm -rf /wheels

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SQLA_AUDIT_LOG_FORMAT=json \
    SQLA_AUDIT_METRICS_HOST=0.0.0.0 \
    SQLA_AUDIT_METRICS_PORT=9108

USER 10001:10001
EXPOSE 9108
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=3)"]

ENTRYPOINT ["sqla-audit", "consume"]
