"""docker-compose.yml, the full local stack (issue 17, item 5). No engine here: the file
is read, and every address the service's processes are given is checked against the
service that must answer it (host, port, credentials, database, bucket)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.datamap import load_datamap
from app.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]
DELETION = ("migrate", "api", "worker", "poller")
STORES = ("postgres", "ferretdb-postgres", "ferretdb", "minio", "minio-setup", "mailpit")

Service = dict[str, Any]


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    found: dict[str, Service] = compose["services"]
    return found


def env(service: Service) -> dict[str, str]:
    values = service.get("environment", {})
    assert isinstance(values, dict), "environment as a mapping (so the checks can read it)"
    return {name: str(value) for name, value in values.items()}


def published(service: Service) -> dict[int, str]:
    """``{container port: host address}`` of the published ports."""
    ports = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        assert len(parts) == 3, f"{spec}: publish as address:port:port"
        ports[int(parts[2])] = parts[0]
    return ports


def needs(services: dict[str, Service], name: str) -> set[str]:
    """Every service that ``name`` waits for, directly or not."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dependency in services[todo.pop()].get("depends_on", {}):
            if dependency not in seen:
                seen.add(dependency)
                todo.append(dependency)
    return seen


def test_the_stack_has_the_service_and_its_stores(services: dict[str, Service]) -> None:
    assert set(DELETION) | set(STORES) <= services.keys()
    for name in DELETION:
        assert services[name]["build"] == "."
        assert services[name]["image"] == "soundops-deletion:local"
        assert services[name]["read_only"] is True
    commands = {name: services[name]["command"] for name in DELETION}
    assert commands == {
        "migrate": ["migrate"],
        "api": ["serve", "--host", "0.0.0.0"],
        "worker": ["worker"],
        "poller": ["mailbox", "poll"],
    }
    assert services["ferretdb"]["image"].startswith("ghcr.io/ferretdb/ferretdb:1.24")
    for name, service in services.items():  # every other image at a fixed version
        if "build" not in service:
            image = service["image"]
            assert ":" in image.rpartition("/")[2] and not image.endswith(":latest"), name


def test_the_service_runs_after_its_migration_and_its_stores(
    services: dict[str, Service],
) -> None:
    for name in ("api", "worker", "poller"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert {"postgres", "ferretdb", "minio-setup", "mailpit"} <= needs(services, name)
    assert services["migrate"]["restart"] == "no"
    assert "ferretdb-postgres" in needs(services, "ferretdb")
    assert "greenmail" in needs(services, "poller")


def test_every_address_points_at_the_service_that_answers_it(
    services: dict[str, Service],
) -> None:
    postgres = env(services["postgres"])
    for name in DELETION:
        values = env(services[name])
        for variable, database in [
            ("DELETION_DATABASE_URL", postgres["POSTGRES_DB"]),
            ("DELETION_TARGET_POSTGRES_URL", "soundops"),
        ]:
            url = urlsplit(values[variable])
            assert (url.hostname, url.port, url.path) == ("postgres", 5432, f"/{database}")
            assert (url.username, url.password) == (
                postgres["POSTGRES_USER"],
                postgres["POSTGRES_PASSWORD"],
            )
        mongo = urlsplit(values["DELETION_MONGODB_URL"])
        listen = env(services["ferretdb"])["FERRETDB_LISTEN_ADDR"]
        assert (mongo.scheme, mongo.hostname, str(mongo.port)) == (
            "mongodb",
            "ferretdb",
            listen.rpartition(":")[2],
        )
        s3 = urlsplit(values["DELETION_S3_ENDPOINT_URL"])
        assert (s3.hostname, s3.port) == ("minio", 9000)
        minio = env(services["minio"])
        assert values["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
        assert values["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
        smtp = urlsplit(values["DELETION_SMTP_URL"])
        assert (smtp.scheme, smtp.hostname, smtp.port) == ("smtp", "mailpit", 1025)


def test_ferretdb_runs_on_its_own_postgresql(services: dict[str, Service]) -> None:
    ferretdb = env(services["ferretdb"])
    backend = env(services["ferretdb-postgres"])
    assert ferretdb["FERRETDB_HANDLER"] == "postgresql"
    url = urlsplit(ferretdb["FERRETDB_POSTGRESQL_URL"])
    assert (url.hostname, url.port, url.path) == (
        "ferretdb-postgres",
        5432,
        "/" + backend["POSTGRES_DB"],
    )
    assert (url.username, url.password) == (backend["POSTGRES_USER"], backend["POSTGRES_PASSWORD"])


def test_the_soundops_database_is_made_from_the_schema_the_tests_use(
    services: dict[str, Service],
) -> None:
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services["postgres"]["volumes"]}
    init = mounts["/docker-entrypoint-initdb.d/10-soundops.sh"]
    schema = mounts["/soundops/schema.sql"]
    assert (ROOT / schema).read_text() == (ROOT / "tests/data/soundops_schema.sql").read_text()
    script = (ROOT / init).read_text()
    assert "CREATE DATABASE soundops OWNER" in script
    assert "-f /soundops/schema.sql" in script


def test_minio_gets_the_buckets_of_the_data_map(services: dict[str, Service]) -> None:
    script = "\n".join(services["minio-setup"]["command"])
    buckets = load_datamap().s3.buckets
    made = set(re.findall(r"local/([a-z0-9.-]+)", script.split("mc mb", 1)[1].splitlines()[0]))
    assert made == set(buckets)
    for name, bucket in buckets.items():
        assert (f"mc version enable local/{name}" in script) == bool(bucket.versioned)


def test_the_poller_reads_the_mailbox_of_the_stack(services: dict[str, Service]) -> None:
    imap = urlsplit(env(services["poller"])["DELETION_IMAP_URL"])
    greenmail = env(services["greenmail"])["GREENMAIL_OPTS"]
    assert (imap.hostname, imap.port) == ("greenmail", 3143)
    assert "-Dgreenmail.setup.test.imap" in greenmail
    assert f"-Dgreenmail.users={imap.username}:{imap.password}@" in greenmail
    assert services["poller"]["profiles"] == services["greenmail"]["profiles"] == ["mailbox"]


def test_the_processes_listen_where_they_are_published(services: dict[str, Service]) -> None:
    api = env(services["api"])
    assert api["DELETION_RUN_WORKER"] == "false"
    assert int(api["DELETION_PORT"]) in published(services["api"])
    for name in ("worker", "poller"):
        assert int(env(services[name])["DELETION_METRICS_PORT"]) in published(services[name])
    # Local secrets, so nothing listens beyond this machine.
    for name, service in services.items():
        assert set(published(service).values()) <= {"127.0.0.1"}, name


def test_the_settings_of_each_process_are_accepted_by_the_service(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's own validation over each process's environment: every variable is
    a setting it reads, and together they start (test environment, no Graph API)."""
    known = {"DELETION_PORT", "DELETION_METRICS_PORT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for field_name, field in Settings.model_fields.items():
        known.add(field.alias or f"DELETION_{field_name.upper()}")
    for name in DELETION:
        values = env(services[name])
        assert set(values) <= known, name
        with monkeypatch.context() as patch:
            for variable in list(os.environ):
                if variable.startswith(("DELETION_", "AWS_")):
                    patch.delenv(variable)
            for variable, value in values.items():
                patch.setenv(variable, value)
            get_settings.cache_clear()
            try:
                settings = get_settings()
            finally:
                get_settings.cache_clear()
        assert settings.environment.value == "test"
        assert settings.absent_stores == {"meta_graph"}
        assert settings.imap_url is not None or name != "poller"
