# syntax=docker/dockerfile:1.7
# Quayside's one image: the code-location gRPC server, dagster-webserver, dagster-daemon and every
# run's ECS task start from it with different commands (docs/deploying.md). Built from the lockfile,
# without the test and benchmark groups; the dbt manifest is parsed here, never at start-up.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir 'uv==0.13.9'
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PYTHON=python3.11
WORKDIR /opt/quayside
# Dependencies first, in their own layer: a code change does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-default-groups --no-install-project
COPY quayside quayside
COPY lake_assets lake_assets
COPY resources resources
COPY sensors sensors
COPY dbt_project dbt_project
COPY workspace.yaml ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-default-groups
# The production target (Athena): parsing renders its materializations, so the manifest is the aws one.
RUN cd dbt_project && QUAYSIDE_PROFILE=aws ../.venv/bin/dbt parse --quiet --profiles-dir . \
    && rm -rf logs

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --user-group --home-dir /opt/quayside --shell /usr/sbin/nologin quayside
# Amazon RDS's CA bundle, for deploy/dagster.yaml's sslmode=verify-full.
ADD --chmod=0644 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /etc/ssl/certs/rds-global-bundle.pem
COPY --from=build /opt/quayside /opt/quayside
COPY deploy/dagster.yaml /opt/dagster/dagster.yaml
COPY deploy/workspace.yaml /opt/dagster/workspace.yaml
# The code is root's and read-only; the quayside user writes only dbt's run folders.
RUN chown -R quayside:quayside /opt/quayside/dbt_project/target
ENV PATH=/opt/quayside/.venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster \
    QUAYSIDE_PROFILE=aws \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER quayside
WORKDIR /opt/quayside
EXPOSE 3000 4000
# The code-location service; the webserver and the daemon override the command (docs/deploying.md).
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "lake_assets.definitions", \
     "--location-name", "quayside"]
