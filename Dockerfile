# syntax=docker/dockerfile:1
# One image for every FlowSentinel service: `docker run IMAGE featurizer|scorer|alerter|collector|replay|train`.
# The builder stage turns the project and its runtime dependencies (pyproject's [project.dependencies], never
# the dev extras) into wheels; the runtime stage installs only those wheels, so no compiler, no pip cache and
# no build tool reaches the final image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services/ services/
COPY training/ training/
# tensorflow-serving-api (the scorer's TF-Serving client) requires `tensorflow`, a second 2 GB TensorFlow beside
# tensorflow-cpu: it is built and installed without dependencies, as the Makefile does.
ARG TF_SERVING_API="tensorflow-serving-api==2.21.*"
RUN pip wheel --wheel-dir /wheels . \
    && pip wheel --no-deps --wheel-dir /wheels/no-deps "${TF_SERVING_API}"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="flowsentinel" \
      org.opencontainers.image.description="Early detection of network attacks from NetFlow/IPFIX flows" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    FLOWSENTINEL_SCHEMAS_DIR=/app/schemas \
    FLOWSENTINEL_MODELS_DIR=/models \
    FLOWSENTINEL_RUN_DIR=/tmp \
    FLOWSENTINEL_ALERTS_FILE=/var/lib/flowsentinel/alerts.jsonl \
    FLOWSENTINEL_METRICS_PORT=9100
RUN groupadd --system --gid 10001 flowsentinel \
    && useradd --system --uid 10001 --gid flowsentinel --home-dir /app --shell /usr/sbin/nologin flowsentinel \
    && mkdir -p /app /models /var/lib/flowsentinel \
    && chown flowsentinel:flowsentinel /var/lib/flowsentinel
# The wheels are bind-mounted from the builder, not copied: they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels flowsentinel==0.1.0 \
    && pip install --no-cache-dir --no-index --no-deps /wheels/no-deps/*.whl
WORKDIR /app
COPY schemas/ /app/schemas/
COPY deploy/docker/healthcheck.py /app/healthcheck.py
USER 10001:10001
EXPOSE 9100
# Liveness of the service's own endpoint (FLOWSENTINEL_METRICS_PORT); orchestrators probe /readyz themselves.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 CMD ["python", "/app/healthcheck.py", "/healthz"]
ENTRYPOINT ["flowsentinel"]
CMD ["--help"]
