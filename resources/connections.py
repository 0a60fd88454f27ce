"""Source connections as Dagster resources, one per entry of lake_assets/connections.yaml.

Settings written `env:NAME` become `dagster.EnvVar("NAME")`: the UI and run config show the
variable's name, never its value, and nothing secret is written in the repository.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from quayside.connections import KINDS, LANDING, load_connections, open_connection, parse_connection
from quayside.extract import Extractor
from quayside.lake import Storage
from quayside.specs import DatasetSpec


class SourceConnection(dg.ConfigurableResource):
    """Where a dataset's data comes from. Dagster config needs a fixed schema, so this holds the
    settings of every kind (quayside.connections.KINDS), each one a place for a dagster.EnvVar."""

    type: str
    bucket: str = ""
    prefix: str = ""
    region: str = "eu-west-2"
    endpoint_url: str = ""
    role_arn: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    root: str = ""
    host: str = ""
    port: int = 22
    username: str = ""
    known_hosts: str = ""
    private_key_path: str = ""
    private_key: str = ""
    container: str = ""
    connection_string: str = ""
    account_url: str = ""
    credential: str = ""
    url: str = ""
    password: str = ""
    base_url: str = ""
    token: str = ""
    api_key: str = ""
    api_key_header: str = "X-API-Key"
    timeout_seconds: float = 30.0
    max_retries: int = 5

    def open(self, name: str) -> Storage | Extractor:
        kind = KINDS.get(self.type)
        if kind is None:
            raise ValueError(f"connection {name!r}: unknown type {self.type!r}")
        settings = {k: v for k, v in self.model_dump().items() if v != "" and k in kind.model_fields}
        return open_connection(parse_connection(name, settings))


def connection_resources(path: Path) -> dict[str, SourceConnection]:
    return {name: SourceConnection(**{k: dg.EnvVar(v[4:]) if isinstance(v, str) and v.startswith("env:") else v
                                      for k, v in settings.items()})
            for name, settings in load_connections(path).items()}


def connection_keys(spec: DatasetSpec) -> set[str]:
    """The resource a dataset's source connection needs (none for the lake's own landing zone)."""
    return set() if spec.source.connection == LANDING else {spec.source.connection}


def open_source(context: dg.AssetExecutionContext | dg.SensorEvaluationContext,
                spec: DatasetSpec) -> Storage | Extractor | None:
    """The dataset's connection, opened; None for the lake's own landing zone."""
    if spec.source.connection == LANDING:
        return None
    return getattr(context.resources, spec.source.connection).open(spec.source.connection)
