# syntax=docker/dockerfile:1
# soundops-deletion: a slim, non-root image. Build: docker build -t soundops-deletion .
# (These development machines have no Docker engine; CI builds the wheel this image installs.)

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip wheel --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl

FROM python:3.12-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DELETION_ENVIRONMENT=production \
    DELETION_DATABASE_URL=sqlite+aiosqlite:////var/lib/soundops-deletion/deletion.db
RUN useradd --system --uid 10001 --home-dir /var/lib/soundops-deletion --create-home deletion
COPY --from=build /opt/venv /opt/venv
USER deletion
WORKDIR /var/lib/soundops-deletion
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["soundops-deletion"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
