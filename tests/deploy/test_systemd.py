"""deploy/systemd/parloa-bridge.service: the unit's options, checked against the product (the
console script, the CLI, the drain timeout), and ``systemd-analyze verify`` on it when systemd
is installed. MemoryDenyWriteExecute= is checked by running the bridge under the kernel's
PR_SET_MDWE, which is how systemd enforces that option on kernels that have it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bridge.cli import build_parser, cmd_run
from bridge.config import DatabaseConfig, EngineConfig
from tests.support.paths import ROOT

UNIT = ROOT / "deploy" / "systemd" / "parloa-bridge.service"
INSTALL_PREFIX = "/opt/parloa-bridge"
CONFIG = "/etc/parloa-bridge/bridge.toml"
DATABASE_URL = "sqlite+aiosqlite:////var/lib/parloa-bridge/bridge.db"
#: the process exits with this when the kernel has no PR_SET_MDWE
NO_MDWE = 77


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of (key, value) pairs in order; a key may repeat (systemd appends or resets)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"a setting before any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {line!r}"
        current.append((key.strip(), value.strip()))
    assert not pending, "the unit ends inside a continued line"
    return sections


def settings(section: str) -> dict[str, str]:
    """A section's settings, each key's last value (what systemd uses for a single value)."""
    pairs = parse_unit(UNIT.read_text())[section]
    return dict(pairs)


def seconds(value: str) -> float:
    """A systemd time span of plain seconds, or with s/min units."""
    total = 0.0
    for part in value.split():
        for suffix, factor in (("min", 60), ("s", 1)):
            if part.endswith(suffix):
                total += float(part[: -len(suffix)]) * factor
                break
        else:
            total += float(part)
    return total


def exec_start() -> list[str]:
    return shlex.split(settings("Service")["ExecStart"])


def test_service_section() -> None:
    service = settings("Service")
    keys = [key for key, _ in parse_unit(UNIT.read_text())["Service"]]
    assert len(keys) == len(set(keys)), "a key set twice: the first value is lost"
    assert service["Type"] == "simple", "the daemon does not speak sd_notify"
    assert "ExecStartPre" not in service, "auto_migrate migrates on a single host"
    assert service["EnvironmentFile"] == "-/etc/parloa-bridge/env"
    assert service["StateDirectory"] == "parloa-bridge"
    assert service["Restart"] == "on-failure"
    assert seconds(service["RestartSec"]) == 2
    assert service["KillSignal"] == "SIGTERM"
    # One of the two, with a comment saying why.
    assert ("User" in service) != (service.get("DynamicUser") == "yes")
    assert service.get("User", "parloa-bridge") == "parloa-bridge"
    hardening = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    assert {k: service.get(k) for k in hardening} == hardening
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert settings("Install")["WantedBy"] == "multi-user.target"


def test_exec_start_runs_the_console_script_with_the_configuration() -> None:
    argv = exec_start()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    program = Path(argv[0])
    assert program.name in scripts, f"{program.name} is not a console script of the project"
    assert scripts[program.name] == "bridge.cli:main"
    assert program.parent == Path(INSTALL_PREFIX) / "bin"
    args = build_parser().parse_args(argv[1:])
    assert args.func is cmd_run
    assert args.config == CONFIG


def test_stop_timeout_outlasts_the_drain() -> None:
    stop = seconds(settings("Service")["TimeoutStopSec"])
    example = tomllib.loads((ROOT / "config" / "bridge.example.toml").read_text())
    drains = {
        EngineConfig().drain_timeout_seconds,
        float(example["engine"]["drain_timeout_seconds"]),
    }
    for drain in drains:
        assert stop >= drain + 10, "SIGKILL must not come before the drain and the shutdown"


def test_the_database_the_comment_names_lies_in_the_state_directory() -> None:
    text = UNIT.read_text()
    assert f'url = "{DATABASE_URL}"' in text
    DatabaseConfig(url=DATABASE_URL)
    database = Path(str(make_url(DATABASE_URL).database))
    state = Path("/var/lib") / settings("Service")["StateDirectory"]
    assert database.parent == state
    assert Path(settings("Service")["WorkingDirectory"]) == state


# --- systemd-analyze ---------------------------------------------------------------------------


def verify(unit_text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on a copy whose ExecStart is this venv's console script (the
    unit's own path does not exist here, and verify checks that it is executable)."""
    program = Path(sys.executable).parent / "parloa-bridge"
    assert program.is_file(), "the project is not installed in this environment"
    assert unit_text.count(f"{INSTALL_PREFIX}/bin/parloa-bridge ") == 1
    copy = folder / UNIT.name  # the unit's name matters to verify
    copy.write_text(unit_text.replace(f"{INSTALL_PREFIX}/bin/parloa-bridge ", f"{program} "))
    return subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_systemd_analyze
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    result = verify(UNIT.read_text(), tmp_path)
    # Nothing is filtered: even in a container without systemd as PID 1, verify prints nothing
    # for a correct unit; any line is a problem with the unit (unknown key, bad value, missing
    # executable) that systemd would ignore or refuse at load time.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_systemd_analyze_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """verify exits 0 on an unknown key or a bad value, so its output is what counts."""
    for broken in (
        UNIT.read_text().replace("UMask=0077", "UMask=0077\nProtectEverything=yes"),
        UNIT.read_text().replace("AF_UNIX", "AF_NOSUCH"),
    ):
        result = verify(broken, tmp_path)
        assert result.stdout + result.stderr != ""


# --- MemoryDenyWriteExecute --------------------------------------------------------------------

# Under PR_SET_MDWE (what systemd uses for MemoryDenyWriteExecute= when the kernel has it), a
# writable and executable mapping is refused; then every channel type is loaded and a bridge
# started with its database, HTTP server, Parloa clients and engine, and stopped.
_UNDER_MDWE = """
import asyncio, ctypes, mmap, sys, tomllib

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(%(no_mdwe)d)
assert libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) == PR_MDWE_REFUSE_EXEC_GAIN
try:
    mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("a writable and executable mapping was allowed: MDWE is not in force")

from bridge.channels import channel_type
from bridge.config import parse_config
from bridge.service import Service, validate_channel

for name in ("webhook", "webchat", "telegram", "slack"):
    channel_type(name)

data = tomllib.loads(open(%(config)r).read())
data["database"] = {"url": "sqlite+aiosqlite:///" + %(database)r}
data["http"] = {"host": "127.0.0.1", "port": 0}
data["simulator"] = {"enabled": True, "host": "127.0.0.1", "port": 0}
env = {
    "PARLOA_RELEASE_ID": "release-mdwe",
    "PARLOA_API_TOKEN": "parloa-token-mdwe",
    "PARLOA_BASE_URL": "http://127.0.0.1:9",
    "WEBHOOK_SECRET": "webhook-secret-0123456789",
    "WEBHOOK_DELIVER_URL": "http://127.0.0.1:9/replies",
}

async def main() -> None:
    service = Service(parse_config(data, env, validate_channel))
    await service.start()
    try:
        ready, parts = await service.readiness()
        assert ready, parts
    finally:
        await service.stop()

asyncio.run(main())
print("ok")
"""


def test_the_bridge_runs_with_memory_deny_write_execute(tmp_path: Path) -> None:
    code = _UNDER_MDWE % {
        "no_mdwe": NO_MDWE,
        "config": str(ROOT / "config" / "compose.toml"),
        "database": str(tmp_path / "bridge.db"),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=90, cwd=ROOT
    )
    if result.returncode == NO_MDWE:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 added it)")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr[-3000:]
