"""The push path (what API Gateway does in production): suppliers PUT files to Quayside.

    PUT /datasets/<domain>/<name>/files/<file name>
    X-Quayside-Timestamp: <unix seconds>
    X-Quayside-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>\\nPUT\\n<path>\\n<sha256 of body>")>

The secret is per dataset, from the environment (`QUAYSIDE_PUSH_SECRET_<DOMAIN>__<NAME>`); a dataset
without one accepts nothing. A request is refused, and nothing written, when unsigned or badly
signed (401), more than 5 minutes old (401), over the size limit (413, before the body is read),
for an unknown dataset (404), with a name that isn't a plain file name matching the dataset's
pattern (422), or a body that isn't the dataset's format (415). An accepted body is streamed to
a temporary file, verified and moved atomically into landing; the answer is a receipt with id,
key, sha256 and bytes, and the landing sensor does the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import tempfile
import time
import uuid
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from urllib.parse import unquote

from quayside.lake import Lake
from quayside.specs import DatasetSpec

MAX_SKEW_SECONDS = 300
CHUNK = 1 << 20
ROUTE = re.compile(r"^/datasets/(?P<domain>[a-z][a-z0-9_]*)/(?P<name>[a-z][a-z0-9_]*)/files/(?P<file>[^/]+)$")


def secret_env_name(spec: DatasetSpec) -> str:
    return f"QUAYSIDE_PUSH_SECRET_{spec.domain.upper()}__{spec.name.upper()}"


def signature(secret: str, timestamp: str, path: str, body_sha256: str) -> str:
    message = f"{timestamp}\nPUT\n{path}\n{body_sha256}".encode()
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def looks_like(fmt: str, head: bytes, tail: bytes) -> bool:
    """A cheap check that a body is what the dataset says it is (full validation happens in stage)."""
    if fmt == "parquet":
        return head[:4] == b"PAR1" and tail[-4:] == b"PAR1"
    try:
        first = head.split(b"\n", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return False
    if fmt == "jsonl":
        try:
            return isinstance(json.loads(first), dict)
        except ValueError:
            return False
    return bool(first.strip())  # csv: a header line of text


class PushError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def make_server(lake: Lake, specs: list[DatasetSpec], host: str = "127.0.0.1", port: int = 8080,
                max_bytes: int = 1 << 30, environ: dict[str, str] | None = None) -> ThreadingHTTPServer:
    by_key = {(s.domain, s.name): s for s in specs}
    env = os.environ if environ is None else environ

    class Handler(BaseHTTPRequestHandler):
        server_version = "quayside-ingest"

        def log_message(self, fmt: str, *args) -> None:  # one line per request, never headers or bodies
            print(f"{self.address_string()} {self.command} {self.path.split('?')[0]} -> {args[1] if len(args) > 1 else ''}")

        def do_PUT(self) -> None:
            try:
                receipt = self._accept()
            except PushError as exc:
                self._reply(exc.status, {"error": str(exc)})
            else:
                self._reply(HTTPStatus.CREATED, receipt)

        def _reply(self, status: HTTPStatus, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def _accept(self) -> dict:
            path = self.path.split("?", 1)[0]
            match = ROUTE.match(path)
            if match is None:
                raise PushError(HTTPStatus.NOT_FOUND, "use PUT /datasets/<domain>/<name>/files/<file name>")
            spec = by_key.get((match["domain"], match["name"]))
            if spec is None:
                raise PushError(HTTPStatus.NOT_FOUND, f"no dataset {match['domain']}.{match['name']}")
            secret = env.get(secret_env_name(spec), "")
            timestamp, signed = self.headers.get("X-Quayside-Timestamp", ""), self.headers.get("X-Quayside-Signature", "")
            if not secret or not timestamp.isdigit() or not signed:
                raise PushError(HTTPStatus.UNAUTHORIZED, "sign the request (X-Quayside-Timestamp, X-Quayside-Signature)")
            if abs(time.time() - int(timestamp)) > MAX_SKEW_SECONDS:
                raise PushError(HTTPStatus.UNAUTHORIZED, "the request's timestamp is more than 5 minutes off")
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise PushError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
            if int(length) > max_bytes:
                raise PushError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{length} bytes is over the {max_bytes}-byte limit")
            name = unquote(match["file"])
            if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or not spec.source.matches(name):
                raise PushError(HTTPStatus.UNPROCESSABLE_ENTITY,
                                f"{name!r} is not a file name of {spec.key} (pattern {spec.source.pattern})")
            with tempfile.TemporaryFile() as body:
                digest, remaining, head, tail = hashlib.sha256(), int(length), b"", b""
                while remaining:
                    chunk = self.rfile.read(min(CHUNK, remaining))
                    if not chunk:
                        raise PushError(HTTPStatus.BAD_REQUEST, "the body ended before Content-Length bytes")
                    digest.update(chunk)
                    body.write(chunk)
                    head = head or chunk[:65536]
                    tail = (tail + chunk)[-8:]
                    remaining -= len(chunk)
                sha = digest.hexdigest()
                if not hmac.compare_digest(signed, signature(secret, timestamp, path, sha)):
                    raise PushError(HTTPStatus.UNAUTHORIZED, "bad signature")
                if not looks_like(spec.source.format, head, tail):
                    raise PushError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"the body is not {spec.source.format}")
                key = f"{spec.source.location}{name}"
                existing = lake.landing.info(key)
                if existing is not None and lake.landing.sha256(key) != sha:
                    raise PushError(HTTPStatus.CONFLICT, f"{name!r} is already waiting in landing with other bytes")
                body.seek(0)
                written, size = lake.landing.write(key, body)
            if written != sha:
                raise PushError(HTTPStatus.INTERNAL_SERVER_ERROR, "landing copy does not match the upload")
            return {"id": str(uuid.uuid4()), "dataset": spec.key, "key": key, "file": PurePosixPath(key).name,
                    "sha256": sha, "bytes": size, "received_at": datetime.now(timezone.utc).isoformat()}

    return ThreadingHTTPServer((host, port), Handler)
