# The example web app (examples/fastapi_app.py) for docker-compose.yml: it only enqueues and
# observes runs through jobrunner's client and FastAPI router; it never runs jobs.
# Build from the repository root: docker build -f deploy/web.Dockerfile .
FROM python:3.11.10-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY jobrunner ./jobrunner
RUN pip install --no-cache-dir ".[fastapi]" "uvicorn>=0.29" \
    && rm -rf jobrunner jobrunner.egg-info pyproject.toml README.md build
COPY examples ./examples

USER 10001:10001
EXPOSE 8000
CMD ["uvicorn", "--factory", "examples.fastapi_app:create_app", "--host", "0.0.0.0", "--port", "8000"]
