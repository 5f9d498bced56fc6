"""The deployment files: Dockerfile, .dockerignore, docker-compose.yml and config/compose.toml.

No Docker engine is needed: the files are parsed and checked against each other and against
the product (the compose configuration is loaded with the real config loader, with the
environment exactly as compose would interpolate it; the image's HEALTHCHECK command line is
run against a real bridge). When an engine answers, ``docker compose config`` checks the
compose file too."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web

from bridge.config import load_config, parse_config
from bridge.service import Service, validate_channel
from tests.support.config import toml_text
from tests.support.net import free_port
from tests.support.paths import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_CONFIG = ROOT / "config" / "compose.toml"

BRIDGE_SERVICES = ("migrate", "bridge-1", "bridge-2")
REPLICAS = ("bridge-1", "bridge-2")

#: What an operator exports before ``docker compose up`` (fakes).
OPERATOR_ENV = {
    "PARLOA_RELEASE_ID": "release-0123",
    "PARLOA_API_TOKEN": "parloa-api-token-fake",
    "WEBHOOK_SECRET": "webhook-secret-0123456789",
    "WEBHOOK_DELIVER_URL": "https://frontend.example.com/bridge/replies",
}
#: ... and for the channels commented out in config/compose.toml.
OPTIONAL_ENV = {
    "TELEGRAM_BOT_TOKEN": "123456:ABC-fake-telegram-token",
    "TELEGRAM_WEBHOOK_SECRET": "tg_hook_secret",
    "SLACK_BOT_TOKEN": "xoxb-fake-slack-token",
    "SLACK_SIGNING_SECRET": "fake-slack-signing-secret",
    "SLACK_APP_TOKEN": "xapp-fake-app-token",
}


# --- compose: the file and its ${VAR} interpolation ---------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


class MissingVariable(Exception):
    pass


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``${VAR:+alt}``, ``$$``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if unset else str(current)
        if op in (":?", "?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return str(current)
        if op in (":+", "+"):
            return "" if unset else arg
        return current or ""

    return _VAR.sub(one, value)


def variables(value: Any) -> list[tuple[str, str | None, str]]:
    """Every ``${VAR…}`` reference in a parsed compose value: (name, operator, argument)."""
    found: list[tuple[str, str | None, str]] = []
    if isinstance(value, dict):
        for item in value.values():
            found += variables(item)
    elif isinstance(value, list):
        for item in value:
            found += variables(item)
    elif isinstance(value, str):
        for match in _VAR.finditer(value):
            if not match["escaped"]:
                found.append((match["name"] or match["bare"], match["op"], match["arg"] or ""))
    return found


def container_env(service: str, shell: Mapping[str, str]) -> dict[str, str]:
    """The environment a service's container gets, given the operator's shell."""
    env = compose()["services"][service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    resolved: dict[str, str] = interpolate(env, shell)
    return {k: str(v) for k, v in resolved.items()}


def duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# --- config/compose.toml --------------------------------------------------------------------


def config_env_names(text: str) -> set[str]:
    """Every ``key = "env:NAME"`` in the file, commented-out ones included."""
    return set(re.findall(r"=\s*\"env:([A-Za-z_][A-Za-z0-9_]*)\"", text))


def active_env_names(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(active_env_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(active_env_names(v) for v in value))
    if isinstance(value, str) and value.startswith("env:"):
        return {value[4:].strip()}
    return set()


def commented_channel_blocks(text: str) -> list[str]:
    """The ``# [[channels]]`` blocks an operator uncomments, as TOML."""
    blocks: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != "# [[channels]]":
            continue
        block = ["[[channels]]"]
        for follow in lines[i + 1 :]:
            if not re.match(r"^# [a-z_]+ = ", follow):
                break
            block.append(follow[2:])
        blocks.append("\n".join(block))
    return blocks


# --- Dockerfile -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped."""
    instructions: list[Instruction] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments are removed even inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
        current = ""
    assert not current, "the Dockerfile ends inside a continued instruction"
    return instructions


def stages() -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in dockerfile():
        if ins.keyword == "FROM":
            out.append([])
        assert out, f"{ins.keyword} before the first FROM"
        out[-1].append(ins)
    return out


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def healthcheck_command() -> list[str]:
    """The runtime stage's HEALTHCHECK as an exec-form argument list."""
    ins = only(stages()[-1], "HEALTHCHECK")
    options, sep, command = ins.args.partition("CMD ")
    assert sep, "HEALTHCHECK without CMD"
    assert all(o.startswith("--") for o in options.split()), options
    argv = json.loads(command)  # exec form: no shell needed in the image
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def exposed_ports() -> set[int]:
    ports = set()
    for ins in stages()[-1]:
        if ins.keyword == "EXPOSE":
            ports |= {int(p.split("/")[0]) for p in ins.args.split()}
    return ports


def env_instructions(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


# --- .dockerignore --------------------------------------------------------------------------


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern (Go filepath.Match plus ``**``) as a regex."""
    p = os.path.normpath(pattern.strip().lstrip("/"))
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        elif p[i] == "[":
            end = p.index("]", i)
            body = p[i + 1 : end]
            out += "[" + ("^" + body[1:] if body[:1] in "^!" and body else body) + "]"
            i = end + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out + r"\Z")


def ignored(path: str) -> bool:
    """Whether the build context leaves ``path`` (or a folder above it) out."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _ignore_regex(line.lstrip("!"))))
    parts = Path(path).parts
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negate, regex in rules:  # the last pattern matching the path or a folder above wins
        if any(regex.match(prefix) for prefix in prefixes):
            result = not negate
    return result


# --- the tests: compose ---------------------------------------------------------------------


def test_compose_services_and_start_order() -> None:
    data = compose()
    services = data["services"]
    assert {"postgres", *BRIDGE_SERVICES} <= set(services)

    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16-alpine"
    volume = next(v.split(":")[0] for v in postgres["volumes"] if "/var/lib/postgresql/data" in v)
    assert volume in data["volumes"], "the database lives in a named volume"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])

    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"

    for name in REPLICAS:
        replica = services[name]
        assert replica["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert replica.get("command", ["run"]) == ["run"]
        assert replica["restart"] == "unless-stopped"
    for name in BRIDGE_SERVICES:  # started by a plain `docker compose up`
        assert "profiles" not in services[name]


def test_replicas_share_image_database_and_config() -> None:
    services = compose()["services"]
    bridges = [services[name] for name in BRIDGE_SERVICES]
    assert all(b["image"] == bridges[0]["image"] for b in bridges)
    assert all(b["build"] == bridges[0]["build"] for b in bridges)
    build = bridges[0]["build"]
    if isinstance(build, str):
        build = {"context": build}
    dockerfile_path = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    assert dockerfile_path.resolve() == DOCKERFILE

    # The two replicas are one definition (YAML anchors) apart from their host port.
    one, two = ({k: v for k, v in services[n].items() if k != "ports"} for n in REPLICAS)
    assert one == two
    host_ports = []
    for name in REPLICAS:
        (mapping,) = services[name]["ports"]
        *_, host, container = str(mapping).split(":")
        host_ports.append(int(host))
        assert int(container) in exposed_ports()
    assert len(set(host_ports)) == len(REPLICAS)

    # One database for all, PostgreSQL, on the postgres service with its credentials.
    shell = {**OPERATOR_ENV, "POSTGRES_PASSWORD": "s3cret"}
    urls = {container_env(name, shell)["DATABASE_URL"] for name in BRIDGE_SERVICES}
    (url,) = urls
    parts = urlsplit(url)
    pg = container_env("postgres", shell)
    assert parts.scheme == "postgresql+asyncpg"
    assert parts.hostname == "postgres" and (parts.port or 5432) == 5432
    assert (parts.username, parts.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert parts.path.lstrip("/") == pg["POSTGRES_DB"]
    assert pg["POSTGRES_PASSWORD"] == "s3cret"

    # Each reads config/compose.toml read-only where the image looks for its configuration.
    config_in_image = env_instructions(stages()[-1])["PARLOA_BRIDGE_CONFIG"]
    for bridge in bridges:
        mounts = [str(v).split(":") for v in bridge["volumes"]]
        src, target, mode = next(m for m in mounts if m[1] == config_in_image)
        assert (ROOT / src).resolve() == COMPOSE_CONFIG
        assert target == config_in_image and mode == "ro"


def test_replica_healthcheck_and_grace_period() -> None:
    services = compose()["services"]
    config = load_config(COMPOSE_CONFIG, container_env("bridge-1", OPERATOR_ENV), validate_channel)
    for name in REPLICAS:
        check = services[name]["healthcheck"]
        test = check["test"]
        assert test[0] == "CMD", "exec form: the image has no curl, and needs no shell"
        assert test[1:] == healthcheck_command(), "the same check as the Dockerfile's"
        assert duration_seconds(check["timeout"]) <= duration_seconds(check["interval"])
        grace = duration_seconds(services[name]["stop_grace_period"])
        assert grace >= config.engine.drain_timeout_seconds + 10, (
            "SIGKILL must not come before the drain (and the shutdown after it) is over"
        )


def test_compose_environment_is_what_the_config_reads() -> None:
    services = compose()["services"]
    text = COMPOSE_CONFIG.read_text()
    mentioned = config_env_names(text)  # active and commented-out channels
    active = active_env_names(tomllib.loads(text))
    assert active <= mentioned
    for name in BRIDGE_SERVICES:
        env = services[name]["environment"]
        assert set(env) == mentioned, f"{name}: environment differs from config's env: names"
        for key, value in env.items():
            refs = {ref for ref, _, _ in variables(value)}
            if key != "DATABASE_URL":
                assert refs == {key}, f"{key} is passed through from the operator's shell"

    # Secrets the running configuration needs are demanded (or defaulted), never silently "".
    env = services["bridge-1"]["environment"]
    for key in active - {"DATABASE_URL"}:
        ((_, op, arg),) = variables(env[key])
        assert op == ":?" or (op == ":-" and arg), f"{key}: ${{{key}:?…}} or a default"
    for key in sorted(OPERATOR_ENV):
        shell = {k: v for k, v in OPERATOR_ENV.items() if k != key}
        with pytest.raises(MissingVariable, match=key):
            container_env("bridge-1", shell)

    # Compose-level variables (not config secrets) all have defaults.
    compose_only = {n for n, _, _ in variables(compose())} - mentioned
    for name, op, arg in variables(compose()):
        if name in compose_only:
            assert op in (":-", "-") and arg, f"${{{name}}} needs a default"


def test_compose_configuration_is_valid() -> None:
    environ = container_env("bridge-1", OPERATOR_ENV)
    config = load_config(COMPOSE_CONFIG, environ=environ, validate_channel=validate_channel)
    assert config.database.url.startswith("postgresql+asyncpg://")
    assert not config.database.auto_migrate, "the migrate service migrates"
    assert config.http.host == "0.0.0.0"
    assert config.http.port in exposed_ports()
    assert config.logging.format == "json"
    (bot,) = config.bots.values()
    assert bot.api_token.get_secret_value() == OPERATOR_ENV["PARLOA_API_TOKEN"]
    assert config.bot_base_url(next(iter(config.bots))) == "https://app.parloa.com"
    assert [c.type for c in config.channels] == ["webhook"]
    # Replicas never need more connections than PostgreSQL's default 100 allows.
    assert config.database.pool_size * len(REPLICAS) + 1 < 100

    # The commented Telegram and Slack blocks are valid once uncommented.
    blocks = commented_channel_blocks(COMPOSE_CONFIG.read_text())
    assert len(blocks) == 2
    text = COMPOSE_CONFIG.read_text() + "\n" + "\n\n".join(blocks) + "\n"
    data = tomllib.loads(text)
    full = parse_config(
        data, container_env("bridge-1", {**OPERATOR_ENV, **OPTIONAL_ENV}), validate_channel
    )
    assert sorted(c.type for c in full.channels) == ["slack", "telegram", "webhook"]


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        for argv in (["docker", "info"], ["docker", "compose", "version"]):
            if subprocess.run(argv, capture_output=True, timeout=10).returncode != 0:
                return False
    except (OSError, subprocess.TimeoutExpired):
        return False
    return True


def test_docker_compose_config_accepts_the_file() -> None:
    if not _docker_engine():
        pytest.skip("no Docker engine with the compose plugin answers here")
    base = {k: v for k, v in os.environ.items() if k not in OPERATOR_ENV}
    # An operator's .env beside the file must not fill in what the test leaves out.
    argv = ["docker", "compose", "-f", str(COMPOSE_FILE), "--env-file", os.devnull]
    argv += ["config", "-q"]
    ok = subprocess.run(argv, env={**base, **OPERATOR_ENV}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(argv, env=base, capture_output=True, text=True)
    assert missing.returncode != 0 and "PARLOA" in missing.stderr + missing.stdout


# --- the tests: Dockerfile ------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_runs_unprivileged() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    for stage in all_stages:
        assert stage[0].args.split()[0] == "python:3.11-slim"
    builder, runtime = all_stages[0], all_stages[-1]
    builder_name = builder[0].args.split()[-1]
    assert builder[0].args.split()[-2].upper() == "AS"
    assert "--mount" not in DOCKERFILE.read_text(), "BuildKit-only: the classic builder refuses it"

    # The runtime takes the builder's environment whole; it installs nothing itself.
    venv = env_instructions(builder)["UV_PROJECT_ENVIRONMENT"]
    copies = [i.args for i in runtime if i.keyword == "COPY" and "--from=" in i.args]
    assert copies == [f"--from={builder_name} {venv} {venv}"]
    assert env_instructions(runtime)["PATH"].startswith(f"{venv}/bin:")
    runs = [i.args for i in runtime if i.keyword == "RUN"]
    runtime_text = " ".join(i.args for i in runtime)
    assert not re.search(r"pip install|uv (sync|pip)", runtime_text)
    assert not re.search(r"apt-get|apk |gcc|build-essential", runtime_text), "no compilers"

    user = only(runtime, "USER").args.split(":")[0]
    assert user not in ("root", "0") and user == "10001"
    assert re.search(r"useradd [^&]*--uid 10001", " ".join(runs))
    assert only(runtime, "WORKDIR").args == "/app"
    assert json.loads(only(runtime, "VOLUME").args) == ["/data"]
    assert re.search(r"chown 10001(:10001)? /data", " ".join(runs)), "/data writable"
    assert exposed_ports() == {8080}

    env = env_instructions(runtime)
    assert env["PARLOA_BRIDGE_CONFIG"] == "/etc/parloa-bridge/bridge.toml"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert json.loads(only(runtime, "ENTRYPOINT").args) == ["parloa-bridge"]
    assert json.loads(only(runtime, "CMD").args) == ["run"]


def test_dockerfile_installs_exactly_the_lock() -> None:
    builder = stages()[0]
    runs = [i.args for i in builder if i.keyword == "RUN"]
    syncs = [r for r in runs if "uv sync" in r]
    assert len(syncs) == 2, "the dependencies' layer, then the project's"
    for run in syncs:
        assert "--locked" in run, "a lock that disagrees with pyproject.toml must fail the build"
        assert "--no-editable" in run
        extras = re.findall(r"--extra[ =](\S+)", run)
        assert extras == ["tracing"], "the tracing extra only: no dev tools"
        assert not re.search(r"--all-extras|--dev|--group", run), "no dev tools"
    assert "--no-install-project" in syncs[0] and "--no-install-project" not in syncs[1]
    copied = [i.args.split()[:-1] for i in builder if i.keyword == "COPY"]
    assert ["pyproject.toml", "uv.lock", "README.md"] in copied
    # The same uv as scripts/bootstrap.sh: one lock format.
    (uv_arg,) = [i.args for i in builder if i.keyword == "ARG" and i.args.startswith("UV_")]
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    (pinned,) = re.findall(r"^UV_VERSION=(\S+)$", bootstrap, re.M)
    assert uv_arg == f"UV_VERSION={pinned}"
    assert any('"uv==${UV_VERSION}"' in r and "pip install" in r for r in runs)


def test_dockerfile_labels_name_the_version_and_licence() -> None:
    runtime = stages()[-1]
    args = dict(i.args.split("=", 1) for i in runtime if i.keyword == "ARG" and "=" in i.args)
    labels = dict(
        (key, value.strip('"'))
        for key, value in (item.split("=", 1) for item in shlex.split(only(runtime, "LABEL").args))
    )
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert args["VERSION"] == project["version"]
    prefix = "org.opencontainers.image."
    assert labels[prefix + "version"] == "${VERSION}"
    assert labels[prefix + "source"] == "${SOURCE_URL}"
    assert labels[prefix + "revision"] == "${REVISION}"
    assert labels[prefix + "licenses"]
    assert labels[prefix + "title"] == project["name"]


def test_dockerfile_healthcheck_runs_the_bridge_probe() -> None:
    assert healthcheck_command() == ["python", "-m", "bridge.healthcheck"]
    everything = DOCKERFILE.read_text()
    code = "\n".join(line for line in everything.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\b(curl|wget)\b", code), "the slim image has neither"
    assert not re.search(r"\b(curl|wget)\b", json.dumps(compose()["services"]))


def test_build_context_has_what_the_dockerfile_copies() -> None:
    for must_skip in (
        ".venv",
        ".git",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        "bridge/__pycache__/x.pyc",
        "bridge.db",
        "data/x.db",
        "test-artifacts",
        ".hypothesis",
        "bridge.toml",
    ):
        assert ignored(must_skip), f"{must_skip} belongs out of the build context"
    copied = 0
    for ins in dockerfile():
        if ins.keyword not in ("COPY", "ADD"):
            continue
        assert ins.keyword == "COPY", "ADD can fetch URLs: COPY only"
        args = [a for a in ins.args.split() if not a.startswith("--")]
        if "--from=" in ins.args:
            continue
        for source in args[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
            copied += 1
    for package in ("bridge", "adapters", "migrations"):
        assert not ignored(f"{package}/__init__.py")
    assert copied >= 4


def test_the_builder_copies_every_package_the_wheel_holds() -> None:
    # The wheel carries what the image runs: migrations (Alembic scripts) and templates.
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = setuptools["packages"]["find"]["include"]
    assert {"bridge*", "adapters*", "migrations*"} <= set(include)
    copied = {
        ins.args.split()[0].rstrip("/")
        for ins in stages()[0]
        if ins.keyword == "COPY" and "--from=" not in ins.args
    }
    for pattern in include:  # a new top-level package must reach the builder too
        assert pattern.rstrip("*").rstrip(".") in copied, f"the builder does not COPY {pattern}"
    assert "*.mako" in setuptools["package-data"]["*"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["parloa-bridge"] == "bridge.cli:main"


# --- the tests: the HEALTHCHECK command, for real ---------------------------------------------


async def run_healthcheck(config: Path) -> int:
    """The image's HEALTHCHECK command line, with ``config`` as $PARLOA_BRIDGE_CONFIG."""
    argv = healthcheck_command()
    assert argv[0] == "python"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(container_env("bridge-1", OPERATOR_ENV))
    env["PARLOA_BRIDGE_CONFIG"] = str(config)
    env["PYTHONPATH"] = str(ROOT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv[1:],
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 20)


def compose_config_on(tmp_path: Path, port: int) -> Path:
    """config/compose.toml with SQLite and ``port``, kept listening on every interface as the
    container does (the probe must then knock on the loopback one)."""
    data = tomllib.loads(COMPOSE_CONFIG.read_text())
    data["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"}
    data["http"] = {**data["http"], "port": port}
    assert data["http"]["host"] == "0.0.0.0"
    path = tmp_path / "bridge.toml"
    path.write_text(toml_text(data))
    return path


async def test_healthcheck_command_against_a_running_bridge(tmp_path: Path) -> None:
    path = compose_config_on(tmp_path, free_port())
    service = Service(load_config(path, container_env("bridge-1", OPERATOR_ENV), validate_channel))
    await service.start()
    try:
        assert await run_healthcheck(path) == 0
    finally:
        await service.stop()


async def test_healthcheck_command_fails_when_nothing_listens_or_unhealthy(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        assert await run_healthcheck(compose_config_on(tmp_path, sock.getsockname()[1])) == 1

    async def sick(_request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/healthz", sick)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        (address, *_) = runner.addresses
        assert await run_healthcheck(compose_config_on(tmp_path, address[1])) == 1
    finally:
        await runner.cleanup()
    broken = tmp_path / "broken.toml"
    broken.write_text("[http]\nport = 'eighty'\n")
    assert await run_healthcheck(broken) == 2
