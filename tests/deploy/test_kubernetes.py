"""deploy/kubernetes/base (issue 17, item 5): valid for the Kubernetes API, offline, and
wired as the contract's processes need (one command per Deployment, one poller, probes,
non-root, secrets only by reference).

Built-in kinds: the JSON schemas that ``kubernetes-validate`` ships, strict (an unknown
field is an error, where the API server would drop it silently). The ServiceMonitor: the
Prometheus Operator's CRD schema vendored in tests/data/kubernetes (README there).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from app.cli import cli
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes" / "base"
SCHEMAS = ROOT / "tests" / "data" / "kubernetes"
# The oldest Kubernetes still maintained when this was written, and the newest schemas
# that kubernetes-validate ships: the manifests use nothing newer or removed.
KUBERNETES_VERSIONS = ["1.32", "1.37"]
SECRET_NAME = "soundops-deletion"
IMAGE_UID = 10001  # the Dockerfile's USER (tests/deploy/test_dockerfile.py)
# Settings that carry a password or a key: only ever from the Secret.
SECRET_SETTINGS = {
    "DELETION_DATABASE_URL",
    "DELETION_TARGET_POSTGRES_URL",
    "DELETION_MONGODB_URL",
    "DELETION_JWT_SECRET",
    "DELETION_HASH_KEY",
    "DELETION_RECEIPT_SIGNING_KEY",
    "DELETION_TOKEN_ENCRYPTION_KEY",
    "DELETION_META_APP_SECRET",
    "DELETION_INSTAGRAM_APP_SECRET",
    "DELETION_NOTIFY_WEBHOOK_SECRET",
    "DELETION_SMTP_URL",
    "DELETION_IMAP_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
# Read by the command line rather than the Settings class (contract "Operations").
PROCESS_VARIABLES = {"DELETION_PORT", "DELETION_METRICS_PORT"}

Doc = dict[str, Any]


def documents() -> list[tuple[str, Doc]]:
    found = []
    for path in sorted(BASE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


DOCS = documents()


def of_kind(kind: str) -> list[Doc]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def named(kind: str, name: str) -> Doc:
    (doc,) = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    return doc


def pod_templates() -> Iterator[tuple[str, Doc]]:
    for doc in of_kind("Deployment") + of_kind("Job"):
        yield doc["metadata"]["name"], doc["spec"]["template"]


def container(workload: Doc) -> Doc:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env(workload: Doc) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container(workload).get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- the files and the schemas -----------------------------------------------------------


def test_the_kustomization_lists_every_file_and_every_file_is_listed() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a file listed twice"
    on_disk = {p.name for p in BASE.iterdir()} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def _strict(schema: Any) -> Any:
    """The CRD schema with no property outside the declared ones, as kubernetes-validate's
    strict schemas are (a misspelt field fails instead of being pruned)."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


SERVICE_MONITOR_SCHEMA = _strict(
    json.loads((SCHEMAS / "servicemonitor-v1.schema.json").read_text())
)
# metadata is "type: object" in a CRD schema; the API server checks it as ObjectMeta.
SERVICE_MONITOR_SCHEMA["properties"]["metadata"] = {"type": "object"}


def validate(doc: Doc, version: str) -> None:
    """Raise when ``doc`` is not a valid object of its kind for Kubernetes ``version``."""
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        assert doc["kind"] == "ServiceMonitor"
        jsonschema.Draft7Validator(SERVICE_MONITOR_SCHEMA).validate(doc)
        return
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("file", "doc"), DOCS, ids=[f"{f}:{d['metadata']['name']}" for f, d in DOCS]
)
def test_every_manifest_is_valid_for_kubernetes(file: str, doc: Doc, version: str) -> None:
    validate(doc, version)


def test_the_kinds_of_the_issue_are_all_there() -> None:
    kinds = sorted(doc["kind"] for _, doc in DOCS)
    for kind in ("Deployment", "Job", "Service", "PodDisruptionBudget", "ServiceMonitor"):
        assert kind in kinds
    assert "Secret" not in kinds, "a Secret in the repository"
    assert len(of_kind("Deployment")) == 3


def test_the_validation_fails_on_a_wrong_manifest() -> None:
    """Each validator can fail: a misspelt field, a wrong type, a bad ServiceMonitor."""
    deployment = copy.deepcopy(named("Deployment", "soundops-deletion-api"))
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, KUBERNETES_VERSIONS[0])
    deployment = copy.deepcopy(named("Deployment", "soundops-deletion-api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, KUBERNETES_VERSIONS[0])
    monitor = copy.deepcopy(named("ServiceMonitor", "soundops-deletion"))
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, KUBERNETES_VERSIONS[0])
    monitor = copy.deepcopy(named("ServiceMonitor", "soundops-deletion"))
    monitor["spec"]["endpoint"] = monitor["spec"].pop("endpoints")
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, KUBERNETES_VERSIONS[0])


# --- the processes -----------------------------------------------------------------------


def test_each_process_runs_its_command() -> None:
    commands = {
        name: container(named(kind, name))["args"]
        for kind, name in [
            ("Deployment", "soundops-deletion-api"),
            ("Deployment", "soundops-deletion-worker"),
            ("Deployment", "soundops-deletion-poller"),
            ("Job", "soundops-deletion-migrate"),
        ]
    }
    assert commands == {
        "soundops-deletion-api": ["serve", "--host", "0.0.0.0"],
        "soundops-deletion-worker": ["worker"],
        "soundops-deletion-poller": ["mailbox", "poll"],
        "soundops-deletion-migrate": ["migrate"],
    }
    for args in commands.values():  # each is a real command of the image's entry point
        assert CliRunner().invoke(cli, [*args, "--help"]).exit_code == 0, args
    for name, template in pod_templates():
        (only,) = template["spec"]["containers"]
        assert "command" not in only, f"{name} replaces the image's entry point"


def test_the_api_runs_no_worker_and_listens_on_deletion_port() -> None:
    api = named("Deployment", "soundops-deletion-api")
    assert env(api)["DELETION_RUN_WORKER"] == "false"
    (port,) = container(api)["ports"]
    assert port["name"] == "http"
    assert env(api)["DELETION_PORT"] == str(port["containerPort"])
    assert named("Deployment", "soundops-deletion-worker")["spec"]["replicas"] >= 1


def test_exactly_one_poller_never_two_at_once() -> None:
    poller = named("Deployment", "soundops-deletion-poller")
    assert poller["spec"]["replicas"] == 1
    assert poller["spec"]["strategy"] == {"type": "Recreate"}
    assert not [
        pdb
        for pdb in of_kind("PodDisruptionBudget")
        if selects(
            pdb["spec"]["selector"]["matchLabels"], poller["spec"]["template"]["metadata"]["labels"]
        )
    ], "a disruption budget on a single replica blocks node drains"


def test_the_migration_job_runs_once_to_completion() -> None:
    job = named("Job", "soundops-deletion-migrate")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1
    assert "activeDeadlineSeconds" in job["spec"]


def test_worker_and_poller_serve_metrics_on_deletion_metrics_port() -> None:
    for name in ("soundops-deletion-worker", "soundops-deletion-poller"):
        workload = named("Deployment", name)
        (port,) = container(workload)["ports"]
        assert port["name"] == "metrics"
        assert env(workload)["DELETION_METRICS_PORT"] == str(port["containerPort"])
        assert "DELETION_PORT" not in env(workload)


def test_every_long_running_process_has_probes_on_healthz_and_readyz() -> None:
    for workload in of_kind("Deployment"):
        only = container(workload)
        ports = {port["name"] for port in only["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in only, f"{workload['metadata']['name']}: no {probe}"
            assert only[probe]["httpGet"]["port"] in ports
        assert only["livenessProbe"]["httpGet"]["path"] == "/healthz"
    api = container(named("Deployment", "soundops-deletion-api"))
    # /readyz, not /readyz/stores: a store outage must not take intake out of rotation.
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_every_pod_is_non_root_read_only_and_bounded() -> None:
    for name, template in pod_templates():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == IMAGE_UID, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False, name
        for only in pod["containers"]:
            context = only["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= only["resources"]["requests"].keys(), name
            assert "memory" in only["resources"]["limits"], name


# --- configuration and secrets -----------------------------------------------------------


def _known_variables() -> set[str]:
    names = set(PROCESS_VARIABLES)
    for field_name, field in Settings.model_fields.items():
        names.add(field.alias or f"DELETION_{field_name.upper()}")
    return names


def test_secrets_come_only_by_reference_from_a_secret_outside_the_repository() -> None:
    for name, template in pod_templates():
        (only,) = template["spec"]["containers"]
        sources = only["envFrom"]
        assert {"secretRef": {"name": SECRET_NAME}} in sources, name
        for item in only.get("env", []):
            assert item["name"] not in SECRET_SETTINGS or "valueFrom" in item, (
                f"{name}: {item['name']} written in the manifest"
            )
        for source in sources:
            if "configMapRef" in source:
                assert named("ConfigMap", source["configMapRef"]["name"])
    config = named("ConfigMap", "soundops-deletion")["data"]
    assert not SECRET_SETTINGS & config.keys()


def test_every_variable_set_is_a_setting_of_the_service() -> None:
    """A misspelt variable would be ignored silently (extra="ignore")."""
    known = _known_variables()
    config = named("ConfigMap", "soundops-deletion")["data"]
    assert set(config) <= known
    assert config["DELETION_ENVIRONMENT"] == "production"
    for _, template in pod_templates():
        for only in template["spec"]["containers"]:
            assert {item["name"] for item in only.get("env", [])} <= known
    assert SECRET_SETTINGS - {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= known


# --- what selects what -------------------------------------------------------------------


def test_selectors_services_budgets_and_the_service_monitor_meet_their_pods() -> None:
    deployments = of_kind("Deployment")
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    for service in of_kind("Service"):
        backends = [
            d
            for d in deployments
            if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert backends, f"{service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for backend in backends:
                assert port["targetPort"] in {p["name"] for p in container(backend)["ports"]}
    metrics = named("Service", "soundops-deletion-metrics")
    chosen = {
        d["metadata"]["name"]
        for d in deployments
        if selects(metrics["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    }
    assert chosen == {"soundops-deletion-worker", "soundops-deletion-poller"}
    for pdb in of_kind("PodDisruptionBudget"):
        assert [
            d
            for d in deployments
            if selects(
                pdb["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]
            )
        ]
    monitor = named("ServiceMonitor", "soundops-deletion")
    scraped = [
        s
        for s in of_kind("Service")
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    service_ports = {p["name"] for s in scraped for p in s["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == service_ports == {"http", "metrics"}
