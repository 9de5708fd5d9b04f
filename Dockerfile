# syntax=docker/dockerfile:1
# soundops-deletion: one image for every process (serve, worker, mailbox poll, migrate).
#   docker build -t soundops-deletion .
# (These development machines have no Docker engine; tests/test_dockerfile.py checks the
# properties below, deploy/kubernetes and docker-compose.yml run the image.)
#
# Base image: CPython 3.11 (what CI tests; requirements/*.lock are resolved for it),
# pinned by digest so that a rebuild gets the same bytes. The digest is the one Renovate
# resolved from Docker Hub for python:3.11.10-slim-bookworm (public commit e522f90 of
# github.com/nalabelle/build, images/digests.Dockerfile, 2024-10-19); it was not resolved
# from this machine, which reaches no registry. To refresh it (security updates of the
# base): `docker buildx imagetools inspect python:3.11-slim-bookworm` (or let Renovate/
# Dependabot do it), and put the new tag and its index digest in PYTHON_IMAGE below (both
# stages use it).
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies first, exactly as locked and hash-checked (a layer cached until the
# lock changes); then the project itself, without dependencies (its build backend,
# setuptools, comes from pyproject's [build-system], in pip's isolated build).
COPY requirements/runtime.lock requirements/runtime.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
RUN /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE}
# Production, and nothing else by default: the tracking database has no default here.
# Without DELETION_DATABASE_URL every command stops at start with
# "DELETION_DATABASE_URL is required in production". Use PostgreSQL; a SQLite file
# (sqlite:////var/lib/soundops-deletion/deletion.db) only for one single process, with
# a persistent volume mounted on /var/lib/soundops-deletion.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DELETION_ENVIRONMENT=production \
    DELETION_PORT=8000
RUN groupadd --system --gid 10001 deletion \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/soundops-deletion --shell /usr/sbin/nologin deletion \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/soundops-deletion
COPY --from=build /opt/venv /opt/venv
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/soundops-deletion
EXPOSE 8000
# /healthz of this container's process: DELETION_PORT for `serve`, DELETION_METRICS_PORT
# for `worker` and `mailbox poll` (app/healthcheck.py). Kubernetes ignores it and uses the
# probes of deploy/kubernetes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-m", "app.healthcheck"]
ENTRYPOINT ["soundops-deletion"]
# The port is DELETION_PORT's (serve reads it), so that the healthcheck follows it.
CMD ["serve", "--host", "0.0.0.0"]
