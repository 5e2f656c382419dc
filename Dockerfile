# One image, two Railway services: SERVICE=gateway (default; the HTTP gateway, relay and page)
# or SERVICE=agent (the LiveKit Agents worker). See README "Deployment (Railway)".

# -- build: a virtualenv with the project and its dependencies -----------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler only for dependencies that publish no wheel for this platform; it stays here.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# Dependencies first, from the lock (`make lock`: exact versions with their hashes): this layer
# is rebuilt only when the lock changes, not on every code change, and two builds of one
# commit install the same packages.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock \
    && pip check

COPY pyproject.toml README.md ./
COPY voicegw ./voicegw
COPY gateway ./gateway
COPY pipelines ./pipelines
COPY relay ./relay
COPY simulators ./simulators
COPY client-config ./client-config
COPY deploy ./deploy
# Editable: the gateway serves the page from client-config/ beside its package, so the code
# stays in /app (copied to the same path below) and the venv points at it. No dependencies
# here: they all came from the lock.
RUN pip install --no-deps -e . \
    && chmod 0755 deploy/entrypoint.sh

# -- runtime: slim, no compiler, not root ---------------------------------------------------
FROM python:3.11-slim AS runtime

RUN groupadd --system app \
    && useradd --system --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SERVICE=gateway \
    PORT=8080 \
    VOICEGW_DATA_DIR=/home/app/data

WORKDIR /app
USER app:app
EXPOSE 8080

# gateway: GET /healthz on $PORT; agent: the LiveKit worker's own health endpoint.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py"]

ENTRYPOINT ["/app/deploy/entrypoint.sh"]
