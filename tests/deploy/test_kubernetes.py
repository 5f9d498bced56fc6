"""deploy/kubernetes/: the manifests, checked against the Kubernetes API schemas and against the
product they deploy.

Every manifest is validated (strictly: unknown fields fail) with the schemas kubernetes-validate
ships, for the newest Kubernetes version it has. The ConfigMap's bridge.toml is loaded with the
real config loader, its environment being the example Secret; ports, probes, the grace period,
the user and the image tag are compared with the configuration, the Dockerfile and
pyproject.toml; the readiness probe's command is run against a real bridge. When kubectl is
installed, ``kubectl kustomize`` builds the folder and its output is validated too."""

from __future__ import annotations

import asyncio
import copy
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bridge.cli import build_parser, cmd_migrate, cmd_run
from bridge.config import BridgeConfig, ConfigError, parse_config
from bridge.service import Service, validate_channel
from tests.support.paths import ROOT

FOLDER = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = FOLDER / "kustomization.yaml"
#: an example only: the real Secret comes from a secret store, so `apply -k` must not carry it
EXAMPLE_SECRET = "secret.yaml"
NAME_LABEL = {"app.kubernetes.io/name": "parloa-bridge"}
#: the newest Kubernetes version whose schemas the installed kubernetes-validate ships
K8S_VERSION = kubernetes_validate.latest_version()


# --- reading the folder ---------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in FOLDER.iterdir() if p.is_file() and p != KUSTOMIZATION)


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def all_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in manifest_files():
        for doc in documents(path):
            yield path, doc


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for _, doc in all_documents()
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(KUSTOMIZATION.read_text())
    return data


def bridge_toml() -> str:
    text: str = one("ConfigMap", "parloa-bridge")["data"]["bridge.toml"]
    return text


def secret_env() -> dict[str, str]:
    secret = one("Secret", "parloa-bridge")
    assert "data" not in secret, "placeholders in stringData, readable"
    return {k: str(v) for k, v in secret["stringData"].items()}


def config() -> BridgeConfig:
    return parse_config(tomllib.loads(bridge_toml()), secret_env(), validate_channel)


def env_names(value: Any) -> set[str]:
    """Every NAME of an ``"env:NAME"`` string in parsed TOML."""
    if isinstance(value, dict):
        return set().union(*(env_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(env_names(v) for v in value))
    if isinstance(value, str) and value.startswith("env:"):
        return {value[4:].strip()}
    return set()


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(workload)["containers"]
    return dict(only)


def workloads() -> list[dict[str, Any]]:
    return [one("Deployment", "parloa-bridge"), one("Job")]


def provided_env(workload: dict[str, Any], secrets: dict[str, dict[str, str]]) -> set[str]:
    """The variable names a workload's container gets from Secrets (checking each reference)."""
    box = container(workload)
    names: set[str] = set()
    for source in box.get("envFrom", []):
        assert set(source) == {"secretRef"}, source
        ref = source["secretRef"]
        assert ref["name"] in secrets, f"envFrom names no known Secret: {ref['name']}"
        assert not ref.get("optional"), "a missing Secret must stop the pod, not start it bare"
        names |= set(secrets[ref["name"]])
    for item in box.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["key"] in secrets[ref["name"]], f"{item['name']}: no key {ref['key']}"
        names.add(item["name"])
    return names


def readiness_command() -> list[str]:
    probe = container(one("Deployment"))["readinessProbe"]
    argv: list[str] = probe["exec"]["command"]
    return argv


def dockerfile_user() -> tuple[int, int]:
    users = [
        line.split(None, 1)[1].strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip().upper().startswith("USER ")
    ]
    assert users, "the Dockerfile sets no USER"
    user, _, group = users[-1].partition(":")  # the runtime stage's
    return int(user), int(group or user)


# --- schemas and the folder ------------------------------------------------------------------


def test_every_manifest_is_valid_for_kubernetes() -> None:
    seen = 0
    for path, doc in all_documents():
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']}: {exc.message} at {list(exc.path)}")
        assert "namespace" not in doc["metadata"], f"{path.name}: namespace-agnostic"
        assert doc["metadata"]["labels"].items() >= NAME_LABEL.items(), path.name
        seen += 1
    kinds = sorted(doc["kind"] for _, doc in all_documents())
    assert kinds == sorted(
        ["ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "Job"]
    )
    assert seen == len(kinds)


def test_a_broken_manifest_fails_validation() -> None:
    """The schemas are strict enough to catch a typo and a wrong type."""
    deployment = one("Deployment")
    typo = copy.deepcopy(deployment)
    pod_spec(typo)["terminationGracePeriod"] = 45
    wrong_type = copy.deepcopy(deployment)
    pod_spec(wrong_type)["containers"][0]["ports"][0]["containerPort"] = "8080"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    data = kustomization()
    assert data["kind"] == "Kustomization"
    resources = data["resources"]
    assert len(resources) == len(set(resources))
    on_disk = {p.name for p in manifest_files()}
    assert EXAMPLE_SECRET in on_disk
    assert set(resources) == on_disk - {EXAMPLE_SECRET}
    assert "namespace" not in data
    (labels,) = data["labels"]
    assert labels["pairs"] == NAME_LABEL and labels["includeSelectors"] is True
    usage = KUSTOMIZATION.read_text()
    for step in ("apply -k", "job/parloa-bridge-migrate", "Secret", EXAMPLE_SECRET):
        assert step in usage, f"the usage comment does not mention {step!r}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_build_is_valid() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(FOLDER)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    built = [doc for doc in yaml.safe_load_all(out.stdout) if doc is not None]
    assert sorted(doc["kind"] for doc in built) == sorted(
        ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Job"]
    )
    for doc in built:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["labels"].items() >= NAME_LABEL.items()
        assert "namespace" not in doc["metadata"]


# --- the configuration contract --------------------------------------------------------------


def test_configmap_is_a_valid_configuration_for_replicas() -> None:
    cfg = config()
    assert cfg.database.url == secret_env()["DATABASE_URL"]
    assert cfg.database.url.startswith("postgresql+asyncpg://"), "replicas share PostgreSQL"
    assert cfg.database.auto_migrate is False, "the migrate Job upgrades the schema"
    assert cfg.http.host == "0.0.0.0" and cfg.http.admin_host == "0.0.0.0"
    assert (cfg.http.port, cfg.http.admin_port) == (8080, 9090)
    assert cfg.http.admin_token is not None
    assert cfg.http.admin_token.get_secret_value() == secret_env()["BRIDGE_ADMIN_TOKEN"]
    assert cfg.logging.format == "json"
    assert cfg.engine.drain_timeout_seconds == 15
    assert list(cfg.bots) == ["support"]
    assert [(c.name, c.type) for c in cfg.channels] == [("web", "webhook")]
    # The Telegram and Slack channels are there to uncomment, not active.
    text = bridge_toml()
    assert re.search(r"^\s*# type = \"telegram\"", text, re.M)
    assert re.search(r"^\s*# type = \"slack\"", text, re.M)


def test_the_secret_provides_exactly_what_the_configuration_reads() -> None:
    read = env_names(tomllib.loads(bridge_toml()))
    assert read == set(secret_env())
    assert read == {
        "DATABASE_URL",
        "PARLOA_RELEASE_ID",
        "PARLOA_API_TOKEN",
        "PARLOA_BASE_URL",
        "WEBHOOK_SECRET",
        "WEBHOOK_DELIVER_URL",
        "BRIDGE_ADMIN_TOKEN",
    }
    secrets = {"parloa-bridge": secret_env()}
    for workload in workloads():
        assert provided_env(workload, secrets) >= read, workload["metadata"]["name"]
    # Without one of them the configuration does not load: the check above matters.
    env = secret_env()
    del env["WEBHOOK_DELIVER_URL"]
    with pytest.raises(ConfigError, match="WEBHOOK_DELIVER_URL"):
        parse_config(tomllib.loads(bridge_toml()), env, validate_channel)


def test_workloads_run_the_cli_with_the_mounted_configuration() -> None:
    configmap = one("ConfigMap", "parloa-bridge")
    image_path = "/etc/parloa-bridge/bridge.toml"  # the image's PARLOA_BRIDGE_CONFIG
    assert f"PARLOA_BRIDGE_CONFIG={image_path}" in (ROOT / "Dockerfile").read_text()
    for workload, command in ((one("Deployment"), cmd_run), (one("Job"), cmd_migrate)):
        box = container(workload)
        assert "command" not in box, "the image's ENTRYPOINT (parloa-bridge) stays"
        args = build_parser().parse_args(box["args"])
        assert args.func is command
        assert args.config == image_path
        (mount,) = [m for m in box["volumeMounts"] if m["mountPath"] == image_path]
        assert mount["subPath"] == "bridge.toml" and mount["readOnly"] is True
        volume = next(v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"] == configmap["metadata"]["name"]
        assert mount["subPath"] in configmap["data"]


def test_ports_probes_and_grace_period_match_the_configuration() -> None:
    cfg = config()
    deployment = one("Deployment")
    box = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in box["ports"]}
    assert ports == {"http": cfg.http.port, "admin": cfg.http.admin_port}

    def port_number(ref: int | str) -> int:
        return ports[ref] if isinstance(ref, str) else ref

    for name in ("livenessProbe", "startupProbe"):
        get = box[name]["httpGet"]
        assert get["path"] == "/healthz", "/healthz needs no token"
        assert port_number(get["port"]) == cfg.http.admin_port
    assert f"http://127.0.0.1:{cfg.http.admin_port}/readyz" in readiness_command()[2]
    assert readiness_command()[:2] == ["python", "-c"]
    probe = box["readinessProbe"]
    assert probe["timeoutSeconds"] <= probe["periodSeconds"]

    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace >= cfg.engine.drain_timeout_seconds + 10, "the drain ends before SIGKILL"

    service = one("Service")
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http" and port["port"] == cfg.http.port
    assert port_number(port["targetPort"]) == cfg.http.port, "the admin port stays private"


def test_selectors_pick_the_replicas_and_only_them() -> None:
    deployment, job = one("Deployment"), one("Job")
    replica_labels = deployment["spec"]["template"]["metadata"]["labels"]
    migrate_labels = job["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": one("Service")["spec"]["selector"],
        "PodDisruptionBudget": one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "anti-affinity": pod_spec(deployment)["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ][0]["podAffinityTerm"]["labelSelector"]["matchLabels"],
    }
    for what, selector in selectors.items():
        assert replica_labels.items() >= selector.items(), f"{what} misses the replicas"
        assert not migrate_labels.items() >= selector.items(), f"{what} picks migrate pods"
    assert one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_pods_run_unprivileged_as_the_image_user() -> None:
    uid, gid = dockerfile_user()
    for workload in workloads():
        pod = pod_spec(workload)
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, gid, gid)
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        box = container(workload)
        assert box["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        writable = {m["mountPath"] for m in box["volumeMounts"] if not m.get("readOnly")}
        scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        assert "/tmp" in writable
        assert {m["name"] for m in box["volumeMounts"] if m["mountPath"] in writable} <= scratch
        assert box["resources"]["requests"] and box["resources"]["limits"]
    assert {m["mountPath"] for m in container(one("Deployment"))["volumeMounts"]} >= {
        "/tmp",
        "/data",
    }


def test_image_tag_is_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for workload in workloads():
        assert container(workload)["image"] == f"parloa-bridge:{version}"


def test_migrate_job_retries_and_cleans_up() -> None:
    job = one("Job")
    assert job["metadata"]["name"] == "parloa-bridge-migrate"
    assert 1 <= job["spec"]["backoffLimit"] <= 6
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")


# --- the readiness probe, for real ---------------------------------------------------------


async def run_readiness_probe(admin_port: int, token: str | None) -> int:
    """The probe's command, pointed at ``admin_port`` here, with the pod's token variable."""
    argv = readiness_command()
    assert argv[2].count("127.0.0.1:9090") == 1
    code = argv[2].replace("127.0.0.1:9090", f"127.0.0.1:{admin_port}")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("BRIDGE_ADMIN_TOKEN", None)
    if token is not None:
        env["BRIDGE_ADMIN_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 20)


async def test_readiness_probe_against_a_running_bridge(tmp_path: Path) -> None:
    data = tomllib.loads(bridge_toml())
    data["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"}
    data["http"] = {**data["http"], "host": "127.0.0.1", "port": 0}
    data["http"].update(admin_host="127.0.0.1", admin_port=0)
    env = secret_env()
    env["PARLOA_BASE_URL"] = "http://127.0.0.1:9"  # nothing is sent to Parloa; never the internet
    service = Service(parse_config(data, env, validate_channel))
    await service.start()
    try:
        assert service.http is not None and service.http.admin is not None
        admin_port = service.http.admin.port
        token = env["BRIDGE_ADMIN_TOKEN"]
        assert await run_readiness_probe(admin_port, token) == 0
        assert await run_readiness_probe(admin_port, token + "-wrong") != 0  # 401
        assert await run_readiness_probe(admin_port, None) != 0
    finally:
        await service.stop()
    assert await run_readiness_probe(admin_port, token) != 0  # nothing listens any more
