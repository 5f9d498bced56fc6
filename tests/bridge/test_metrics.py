"""The metrics registry: what the engine counts is exported, one registry per service."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from bridge.metrics import Metrics
from bridge.vocabulary import EndReason
from tests.support.paths import ROOT


def test_labelled_counts_are_exported() -> None:
    metrics = Metrics()
    metrics.deliveries.labels("tg", "sent").inc()
    metrics.deliveries.labels("tg", "sent").inc()
    metrics.deliveries.labels("tg", "failed").inc()
    metrics.parloa_latency.labels("demo").observe(0.2)
    assert (
        metrics.registry.get_sample_value(
            "parloa_bridge_deliveries_total", {"channel": "tg", "outcome": "sent"}
        )
        == 2
    )
    text = metrics.render().decode()
    assert 'parloa_bridge_deliveries_total{channel="tg",outcome="failed"} 1.0' in text
    assert 'parloa_bridge_parloa_latency_seconds_count{bot="demo"} 1.0' in text


def test_two_services_keep_separate_counts() -> None:
    """One registry per service instance: what one counts is not the other's."""
    first, second = Metrics(), Metrics()
    first.inbound.labels("tg", "accepted").inc()
    second.inbound.labels("tg", "accepted")  # the child exists there, at 0 (not absent)
    assert (
        second.registry.get_sample_value(
            "parloa_bridge_inbound_events_total", {"channel": "tg", "outcome": "accepted"}
        )
        == 0
    )


# --- the help names exactly what is counted -------------------------------------------------

# The counters whose help lists their label values, and which label that is.
LISTED = {"inbound": "outcome", "deliveries": "outcome", "sessions_ended": "reason"}
# The counters whose values are all written as literals where they are counted.
LITERAL = ("inbound", "deliveries")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _values(node: ast.expr, path: Path, assigned: dict[str, list[ast.expr]]) -> set[str] | None:
    """The strings a label argument can be: literals, both sides of ``a if c else b``, a local
    name (what the function assigns to it), an enum member (``Kind.X`` or ``Kind.X.value``,
    read from its module); None when unknown."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        sides = [_values(node.body, path, assigned), _values(node.orelse, path, assigned)]
        return None if None in sides else set().union(*filter(None, sides))
    if isinstance(node, ast.Name) and assigned.get(node.id):
        values = [_values(expr, path, {}) for expr in assigned[node.id]]
        return None if None in values else set().union(*filter(None, values))
    if isinstance(node, ast.Attribute):
        try:
            value = eval(  # a dotted name, resolved in the module that wrote it
                compile(ast.Expression(node), str(path), "eval"),
                vars(importlib.import_module(_module_name(path))),
            )
        except Exception:
            return None
        return {str(value)} if isinstance(value, str) else None
    return None


def emitted_label_values() -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """Per counter in LISTED, the label values bridge/ and adapters/ count; and the call
    sites whose value this reading cannot tell (so the test says so instead of passing)."""
    found: dict[str, set[str]] = {name: set() for name in LISTED}
    unknown: dict[str, list[str]] = {name: [] for name in LISTED}
    seen: set[ast.Call] = set()
    for top in ("bridge", "adapters"):
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text("utf-8"), str(path))
            functions = [
                f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            ]
            # innermost first: a call is read with the names of the function that holds it
            for function in reversed(functions):
                assigned: dict[str, list[ast.expr]] = {}
                for node in ast.walk(function):
                    if isinstance(node, ast.Assign) and len(node.targets) == 1:
                        target = node.targets[0]
                        if isinstance(target, ast.Name):
                            assigned.setdefault(target.id, []).append(node.value)
                for node in ast.walk(function):
                    if not (
                        isinstance(node, ast.Call)
                        and node not in seen
                        and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "labels"
                        and isinstance(node.func.value, ast.Attribute)
                        and node.func.value.attr in LISTED
                        and len(node.args) >= 2
                    ):
                        continue
                    seen.add(node)
                    values = _values(node.args[1], path, assigned)
                    if values is None:
                        site = f"{path.relative_to(ROOT)}:{node.lineno}"
                        unknown[node.func.value.attr].append(site)
                    else:
                        found[node.func.value.attr] |= values
    return found, unknown


def listed_in_help(metrics: Metrics, name: str) -> set[str]:
    documentation = getattr(metrics, name).describe()[0].documentation
    listed = re.search(r"\(([a-z_, ]+)\)\s*$", documentation)
    assert listed is not None, f"{name}: no (a, b, ...) list at the end of {documentation!r}"
    return {value.strip() for value in listed.group(1).split(",")}


def test_the_help_lists_exactly_the_outcomes_that_are_counted() -> None:
    """An operator reads the help to know what to alert on: an outcome nobody counts is a
    promise, one counted but not listed a surprise."""
    found, unknown = emitted_label_values()
    assert found["inbound"], "no inbound outcome counted anywhere: is the search broken?"
    metrics = Metrics()
    for name in LITERAL:
        assert not unknown[name], f"{name}: values this test cannot read: {unknown[name]}"
        assert listed_in_help(metrics, name) == found[name], name


def test_the_help_lists_every_end_reason() -> None:
    """Sessions end for an :class:`EndReason` (counted as a literal in places, as the reason
    a lifecycle decision carries in others): the help lists exactly those."""
    found, _unknown = emitted_label_values()
    listed = listed_in_help(Metrics(), "sessions_ended")
    assert listed == {reason.value for reason in EndReason}
    assert found["sessions_ended"] <= listed
