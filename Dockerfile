# parloa-bridge container image.
#
#   docker build -t parloa-bridge .
#   docker run --rm -p 8080:8080 -v "$PWD/bridge.toml:/etc/parloa-bridge/bridge.toml:ro" \
#       -v parloa-bridge-data:/data -e PARLOA_SUPPORT_TOKEN=... parloa-bridge
#
# The configuration is read from $PARLOA_BRIDGE_CONFIG (/etc/parloa-bridge/bridge.toml): mount
# yours there; config/bridge.example.toml is copied next to it for reference. In the container
# set `[http] host = "0.0.0.0"` (port 8080: EXPOSE and HEALTHCHECK below assume it). /data is
# the only writable place: a SQLite database goes to "sqlite+aiosqlite:////data/bridge.db"
# (four slashes: an absolute path); several replicas need PostgreSQL (see docker-compose.yml).
#
# Migrations: `run` migrates on start when `database.auto_migrate = true` (replicas serialise
# on an advisory lock, so that is safe). For controlled upgrades set it false and migrate as a
# separate step before starting the new version:
#     docker run --rm ... parloa-bridge migrate       # with compose: docker compose run --rm migrate
# A replica started against an outdated schema then refuses to run, with a clear message.
#
# Needs BuildKit (the default builder since Docker 23, and always with `docker compose`) for the
# RUN --mount below. Nothing is fetched except the base image and packages from PyPI.

# --- builder: wheels of the project and of its runtime dependencies ------------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first (their layer is reused until pyproject.toml changes). Only
# [project].dependencies: the dev extras are never built or installed.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > requirements.txt
RUN pip wheel --prefer-binary --wheel-dir /wheels -r requirements.txt

COPY bridge ./bridge
COPY adapters ./adapters
COPY migrations ./migrations
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: only the wheels, no compilers, no build tools, not root -----------------------
FROM python:3.11-slim AS runtime

ENV PARLOA_BRIDGE_CONFIG=/etc/parloa-bridge/bridge.toml \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin bridge \
    && mkdir -p /app /data /etc/parloa-bridge \
    && chown 10001:10001 /data

# The wheels are bind-mounted from the builder, so they take no room in the image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels parloa-bridge \
    && parloa-bridge --help > /dev/null

COPY config/bridge.example.toml /etc/parloa-bridge/bridge.example.toml

WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080

# Liveness only (/readyz also checks the database and the channels: use it for a load
# balancer). Standard library only: the slim image has no curl or wget. Proxies are bypassed.
# Change the port here if you change [http] port.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8080/healthz', timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# SIGTERM: stop intake, drain for up to engine.drain_timeout_seconds, exit 0. Give the
# container more time than that before it is killed (docker stop -t, stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["parloa-bridge"]
CMD ["run"]
