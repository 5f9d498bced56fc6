"""uv.lock: it records exactly pyproject.toml's requirements, every version it pins satisfies
them, and the environment scripts/test made holds exactly what it pins."""

from __future__ import annotations

import importlib.metadata
import tomllib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.support.paths import ROOT

Package = dict[str, Any]
#: what ``python -m venv`` puts in every environment it makes (3.11: pip, setuptools); uv
#: leaves them there
SEEDED = {"pip", "setuptools"}


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def locked() -> list[Package]:
    packages: list[Package] = tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    return packages


def the_project(packages: list[Package]) -> Package:
    (project,) = [p for p in packages if p.get("source") == {"editable": "."}]
    return project


def requirement_key(req: Requirement, extra: str | None) -> tuple[str, str, str, str]:
    marker = f"extra == '{extra}'" if extra else ""
    if req.marker is not None:
        marker = f"{req.marker} and {marker}" if marker else str(req.marker)
    return (canonicalize_name(req.name), ",".join(sorted(req.extras)), str(req.specifier), marker)


def differences(project: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    """How pyproject.toml's ``[project]`` and the lock's record of it differ (empty: agree)."""
    asked = {requirement_key(Requirement(d), None) for d in project["dependencies"]}
    for extra, deps in project["optional-dependencies"].items():
        asked |= {requirement_key(Requirement(d), extra) for d in deps}
    recorded = {
        (
            canonicalize_name(r["name"]),
            ",".join(sorted(r.get("extras", []))),
            str(SpecifierSet(r.get("specifier", ""))),
            r.get("marker", ""),
        )
        for r in meta["requires-dist"]
    }
    out = [f"pyproject.toml only: {r}" for r in sorted(asked - recorded)]
    out += [f"uv.lock only: {r}" for r in sorted(recorded - asked)]
    if sorted(meta.get("provides-extras", [])) != sorted(project["optional-dependencies"]):
        out.append("the extras differ")
    return out


def test_the_lock_records_exactly_what_pyproject_asks_for() -> None:
    """What ``uv sync --locked`` (bootstrap, Dockerfile) compares: a requirement added, dropped
    or changed in pyproject.toml without ``uv lock`` fails here too, with the difference."""
    meta = the_project(locked())["metadata"]
    assert differences(pyproject()["project"], meta) == [], "run `uv lock` (README, Development)"


def test_a_changed_requirement_is_a_difference() -> None:
    meta = the_project(locked())["metadata"]
    project = pyproject()["project"]
    for change in (
        {"dependencies": [*project["dependencies"], "httpx>=0.27"]},
        {"dependencies": [d.replace("aiohttp>=", "aiohttp>=9") for d in project["dependencies"]]},
        {"optional-dependencies": {**project["optional-dependencies"], "docs": ["sphinx"]}},
    ):
        assert differences({**project, **change}, meta) != []


def test_every_pinned_version_satisfies_pyproject() -> None:
    packages = locked()
    versions = {p["name"]: p["version"] for p in packages}
    project = pyproject()["project"]
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in versions, f"{name} is not in uv.lock"
        assert req.specifier.contains(versions[name], prereleases=True), (
            f"{name} {versions[name]} does not satisfy {req.specifier}"
        )
    assert versions["parloa-bridge"] == project["version"]


def wanted(packages: list[Package], extras: set[str]) -> dict[str, str]:
    """What uv installs here for the project with ``extras``: the lock's graph walked from the
    project, each edge's marker evaluated for this interpreter and platform."""
    by_name: dict[str, list[Package]] = {}
    for package in packages:
        by_name.setdefault(package["name"], []).append(package)

    def edges(package: Package, with_extras: set[str]) -> Iterator[Mapping[str, Any]]:
        yield from package.get("dependencies", [])
        for extra in with_extras:
            yield from package.get("optional-dependencies", {}).get(extra, [])

    def applies(edge: Mapping[str, Any]) -> bool:
        return "marker" not in edge or Marker(edge["marker"]).evaluate({"extra": ""})

    root = the_project(packages)
    found: dict[str, str] = {root["name"]: root["version"]}
    todo = [(root, extras)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        package, with_extras = todo.pop()
        key = (package["name"], frozenset(with_extras))
        if key in seen:
            continue
        seen.add(key)
        for edge in filter(applies, edges(package, with_extras)):
            candidates = by_name[edge["name"]]
            if "version" in edge:
                candidates = [c for c in candidates if c["version"] == edge["version"]]
            (target,) = candidates
            found[target["name"]] = target["version"]
            todo.append((target, set(edge.get("extra", []))))
    return found


def test_this_environment_holds_exactly_the_locked_versions() -> None:
    """``scripts/test`` syncs the environment from the lock: nothing more, nothing less, no
    other version (so two installs a week apart are the same install)."""
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
    }
    if "parloa-bridge" not in installed:
        pytest.skip("not the environment scripts/test makes (parloa-bridge is not installed)")
    expected = wanted(locked(), {"dev"})
    extra = {n: v for n, v in installed.items() if n not in expected and n not in SEEDED}
    missing = {n: v for n, v in expected.items() if n not in installed}
    other = {n: (installed[n], v) for n, v in expected.items() if installed.get(n, v) != v}
    assert not (extra or missing or other), (
        f"not in uv.lock: {extra}; missing: {missing}; (installed, locked): {other}"
    )
