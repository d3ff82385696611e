# jobrunner worker image.
#
#   docker build -t jobrunner .
#   docker run -e JOBRUNNER_DATABASE_URL=postgresql://... \
#     -v "$PWD/jobrunner.toml:/etc/jobrunner/jobrunner.toml:ro" jobrunner
#
# Your jobs: build FROM this image and COPY your modules under /app (put "/app" in
# worker.import_paths), or `pip install` your package into /opt/jobrunner as root in that
# build. deploy/ has a docker-compose file and a Kubernetes manifest; docs/operations.md
# explains the settings.

# The base of both stages: a pinned Python 3.11 slim image. Where registry images cannot be
# pulled, pass a Debian bookworm image with python3, python3-venv and tini made from Debian's
# packages (deploy/smoke.sh makes one with debootstrap): --build-arg BASE=jobrunner-base:bookworm
ARG BASE=python:3.11.10-slim-bookworm

# -- build: the package and its dependencies, in a virtual environment ----------------------
FROM ${BASE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/jobrunner
ENV PATH=/opt/jobrunner/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY jobrunner ./jobrunner
# .ci/run runs this same command in a fresh virtual environment.
RUN pip install --no-cache-dir .

# -- runtime: the virtual environment, tini as PID 1, a non-root user ------------------------
FROM ${BASE}

LABEL org.opencontainers.image.title="jobrunner" \
      org.opencontainers.image.description="A distributed cron and job-runner daemon" \
      org.opencontainers.image.licenses="MIT"

# tini is PID 1: it forwards SIGTERM/SIGINT to jobrunner (which drains and exits 0) and
# reaps zombie processes that job code may leave behind.
RUN if [ ! -x /usr/bin/tini ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends tini \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid 10001 jobrunner \
    && useradd --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin jobrunner

COPY --from=build /opt/jobrunner /opt/jobrunner
# The example jobs that deploy/jobrunner.toml runs (worker.import_paths = ["/app"]).
COPY jobs /app/jobs

ENV PATH=/opt/jobrunner/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JOBRUNNER_CONFIG=/etc/jobrunner/jobrunner.toml
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# [http] listen = "0.0.0.0:9108": /healthz, /readyz, /metrics
EXPOSE 9108
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["jobrunner", "health", "-c", "/etc/jobrunner/jobrunner.toml"]

# Exec form: no shell in between, tini runs `jobrunner` as its only child.
ENTRYPOINT ["/usr/bin/tini", "--", "jobrunner"]
CMD ["run", "-c", "/etc/jobrunner/jobrunner.toml"]
