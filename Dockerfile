# parloa-bridge container image.
#
#   docker build -t parloa-bridge .
#   docker run --rm -p 8080:8080 -v "$PWD/bridge.toml:/etc/parloa-bridge/bridge.toml:ro" \
#       -v parloa-bridge-data:/data -e PARLOA_SUPPORT_TOKEN=... parloa-bridge
#
# The configuration is read from $PARLOA_BRIDGE_CONFIG (/etc/parloa-bridge/bridge.toml): mount
# yours there; config/bridge.example.toml is copied next to it for reference. In the container
# set `[http] host = "0.0.0.0"`. /data is the only writable place: a SQLite database goes to
# "sqlite+aiosqlite:////data/bridge.db" (four slashes: an absolute path); several replicas need
# PostgreSQL (see docker-compose.yml and deploy/kubernetes/).
#
# Migrations: `run` migrates on start when `database.auto_migrate = true` (replicas serialise
# on an advisory lock, so that is safe). For controlled upgrades set it false and migrate as a
# separate step before starting the new version:
#     docker run --rm ... parloa-bridge migrate       # with compose: docker compose run --rm migrate
# A replica started against an outdated schema then refuses to run, with a clear message.
#
# Any builder builds it (no BuildKit-only syntax). What is installed is exactly uv.lock,
# hash-checked; nothing is fetched but the base image, uv and the locked packages.

# --- builder: a virtual environment holding the locked runtime dependencies and the project --
FROM python:3.11-slim AS builder

ARG UV_VERSION=0.13.9
ENV UV_PROJECT_ENVIRONMENT=/opt/parloa-bridge \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_SYSTEM_CERTS=1

RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

WORKDIR /src

# The dependencies first: their layer is reused until uv.lock changes. --locked refuses a lock
# that disagrees with pyproject.toml; of the extras only tracing (the OTEL_* variables switch it
# on); the dev tools stay out.
COPY pyproject.toml uv.lock README.md ./
RUN uv venv --python python3 "$UV_PROJECT_ENVIRONMENT" \
    && uv sync --locked --no-install-project --no-editable --extra tracing

COPY bridge ./bridge
COPY adapters ./adapters
COPY migrations ./migrations
RUN uv sync --locked --no-editable --extra tracing \
    && "$UV_PROJECT_ENVIRONMENT/bin/parloa-bridge" --help > /dev/null

# --- runtime: the environment alone; no uv, no build tools, not root ------------------------
FROM python:3.11-slim AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE_URL=unknown
LABEL org.opencontainers.image.title="parloa-bridge" \
      org.opencontainers.image.description="Connects Parloa TextchatV2 bots to Telegram, Slack and a web chat, durably." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="LicenseRef-Proprietary"

ENV PATH=/opt/parloa-bridge/bin:$PATH \
    PARLOA_BRIDGE_CONFIG=/etc/parloa-bridge/bridge.toml \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin bridge \
    && mkdir -p /app /data /etc/parloa-bridge \
    && chown 10001:10001 /data

COPY --from=builder /opt/parloa-bridge /opt/parloa-bridge
COPY config/bridge.example.toml /etc/parloa-bridge/bridge.example.toml

WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080

# Liveness only (/readyz also checks the database and the channels: use it for a load
# balancer). It reads [http] port from the same configuration as the daemon and imports
# nothing but the configuration; the slim image has no curl or wget.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bridge.healthcheck"]

# SIGTERM: stop intake, drain for up to engine.drain_timeout_seconds, exit 0. Give the
# container more time than that before it is killed (docker stop -t, stop_grace_period,
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["parloa-bridge"]
CMD ["run"]
