"""The Grafana dashboard and the Prometheus alert rules in deploy/monitoring: what
`promtool check rules` would check, in Python (`promql-parser`), plus one check promtool
cannot make: every metric they name is one this service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

import app.metrics  # noqa: F401  (registers every metric of the service)

MONITORING = Path(__file__).resolve().parents[1] / "deploy" / "monitoring"
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
_BUILTIN = {"time", "absent"}


def exported_names() -> set[str]:
    names: set[str] = set()
    for collector in list(REGISTRY._collector_to_names):
        for family in collector.collect():
            if not family.name.startswith("deletion_"):
                continue
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
            if family.type == "histogram":  # series exist once observed
                names.update(f"{family.name}_{s}" for s in ("bucket", "count", "sum"))
            if family.type == "counter":
                names.add(f"{family.name}_total")
    return names


def selectors(node: Any) -> set[str]:
    """The metric names an expression selects."""
    found: set[str] = set()
    if type(node).__name__ == "VectorSelector" and node.name:
        found.add(node.name)
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, (str, int, float)):
            found |= selectors(child)
    for child in getattr(node, "args", None) or []:
        found |= selectors(child)
    return found


def check_expression(expr: str, known: set[str]) -> None:
    parsed = promql_parser.parse(expr)  # raises ValueError on a syntax error
    names = selectors(parsed)
    assert names, f"{expr!r} selects no metric"
    unknown = names - known
    assert not unknown, f"{expr!r} names metrics the service does not export: {unknown}"


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    assert set(document) == {"groups"}
    found = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        found.extend(group["rules"])
    return found


def test_alert_rules_are_valid_and_name_exported_metrics() -> None:
    known = exported_names()
    alerts = rules()
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names)), "alert names repeat"
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        check_expression(rule["expr"], known)
        assert _DURATION.match(rule.get("for", "0s")), rule["for"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert all(isinstance(v, str) for v in rule["labels"].values())
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alerts_cover_what_an_operator_must_know() -> None:
    expressions = " ".join(rule["expr"] for rule in rules())
    for metric in (
        "deletion_requests_overdue",  # the legal deadline
        'deletion_requests{status="failed"}',  # a deletion that did not happen
        "deletion_worker_heartbeat_timestamp_seconds",  # nobody is working the queue
    ):
        assert metric in expressions, metric


def test_grafana_dashboard_is_valid_and_names_exported_metrics() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    known = exported_names()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        assert panel["title"]
        # The data source is chosen at import, never a host baked into the file.
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert panel["targets"]
        for target in panel["targets"]:
            check_expression(target["expr"], known)


@pytest.mark.parametrize(
    "expr",
    ["sum(rate(deletion_tasks_total[5m])", "max(deletion_no_such_metric)", "time()"],
)
def test_the_checker_rejects_broken_or_unknown_expressions(expr: str) -> None:
    with pytest.raises((ValueError, AssertionError)):
        check_expression(expr, exported_names())
