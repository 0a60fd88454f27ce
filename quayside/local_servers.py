"""Real servers on 127.0.0.1 for the tests and the `make run-sources` demo: moto (S3), Azurite
(Azure Blob), OpenSSH's sshd (SFTP), PostgreSQL 15 and a small JSON API. Each is a context
manager that starts the server on a free port, yields how to connect, and stops it.

The binaries come from the machine (Debian's openssh-server and postgresql-15, Azurite from npm
under .servers/); `.ci/run` and `make run-sources` install them.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

PROJECT = Path(__file__).resolve().parent.parent
AZURITE = PROJECT / ".servers/node_modules/.bin/azurite-blob"
AZURITE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {seconds} s")


@contextmanager
def _process(args: list[str], port: int, **popen) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)
    try:
        wait_for_port(port)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def moto() -> Iterator[str]:
    """moto's S3/Glue/STS server; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextmanager
def moto_with_iam(unchecked_requests: int) -> Iterator[str]:
    """A moto server with IAM authorisation enforced; yields its endpoint URL. The first
    `unchecked_requests` requests pass unchecked (to create buckets, users, policies and keys);
    every later one must be signed by an IAM user's key and allowed by that user's policies.
    Its own process: moto reads INITIAL_NO_AUTH_ACTION_COUNT at import and counts in class state."""
    port = free_port()
    env = os.environ | {"INITIAL_NO_AUTH_ACTION_COUNT": str(unchecked_requests)}
    with _process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port, env=env):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def azurite() -> Iterator[str]:
    """Azurite's Blob service in memory; yields a connection string (the well-known dev account)."""
    if not AZURITE.exists():
        raise FileNotFoundError(f"{AZURITE} missing: npm install azurite@3.35.0 --prefix .servers")
    port = free_port()
    with _process([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                   "--silent", "--disableTelemetry", "--skipApiVersionCheck"], port):
        yield (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_ACCOUNT_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")


@contextmanager
def sshd(home: Path) -> Iterator[tuple[dict, Path]]:
    """sshd serving SFTP only (key authentication, chrooted to `home/data` by ForceCommand).
    Yields the sftp connection settings (host key pinned in a known_hosts file) and the folder."""
    if not SSHD.exists():
        raise FileNotFoundError(f"{SSHD} missing: apt-get install openssh-server")
    home.mkdir(parents=True, exist_ok=True)
    for name in ("host", "client"):
        if not (home / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    (home / "authorized_keys").write_text((home / "client.pub").read_text())
    data = home / "data"
    data.mkdir(exist_ok=True)
    port = free_port()
    (home / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {home / 'host'}
PidFile {home / 'sshd.pid'}
AuthorizedKeysFile {home / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM yes
StrictModes no
AllowUsers {getpass.getuser()}
Subsystem sftp internal-sftp
ForceCommand internal-sftp -d {data}
AllowTcpForwarding no
""")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    known_hosts = home / "known_hosts"
    algorithm, key = (home / "host.pub").read_text().split(" ")[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {algorithm} {key}\n")
    with _process([str(SSHD), "-D", "-e", "-f", str(home / "sshd_config")], port):
        yield {"type": "sftp", "host": "127.0.0.1", "port": port, "username": getpass.getuser(),
               "known_hosts": str(known_hosts), "private_key_path": str(home / "client")}, data


def _tls_certificate(folder: Path, ca_file: Path) -> tuple[Path, Path]:
    """A fresh CA (its certificate written to `ca_file`) and a server certificate it signed for
    127.0.0.1, so that clients can verify the server as they do RDS (sslmode=verify-full)."""
    key, csr, cert, ca_key = folder / "server.key", folder / "server.csr", folder / "server.pem", folder / "ca.key"
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (["req", "-x509", *ec, "-days", "2", "-subj", "/CN=quayside-test-ca", "-keyout", ca_key, "-out", ca_file],
                 ["req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr],
                 ["x509", "-req", "-in", csr, "-CA", ca_file, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
                  "-extfile", folder / "san.ext", "-out", cert]):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    key.chmod(0o600)  # PostgreSQL refuses a private key others can read
    return cert, key


@contextmanager
def postgres(password: str, ca_file: Path | None = None) -> Iterator[str]:
    """A throwaway PostgreSQL 15 cluster; TCP logins need `password` (scram-sha-256). With
    `ca_file`, it speaks TLS only, with a certificate for 127.0.0.1 signed by a CA written there.
    Yields a SQLAlchemy URL without the password, for user `quayside`, database `postgres`."""
    if not (POSTGRES_BIN / "initdb").exists():
        raise FileNotFoundError(f"{POSTGRES_BIN}/initdb missing: apt-get install postgresql-15")
    # initdb refuses root, and the cluster's folder must belong to the user running it.
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    home = Path(tempfile.mkdtemp(prefix="quayside-pg-"))
    try:
        (home / "pw").write_text(password)
        if as_owner:
            shutil.chown(home, "postgres")
            shutil.chown(home / "pw", "postgres")
        data, port = home / "data", free_port()
        subprocess.run([*as_owner, str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "quayside", "--no-sync",
                        "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256",
                        f"--pwfile={home / 'pw'}"], check=True, stdout=subprocess.DEVNULL)
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={home} -c fsync=off"
        if ca_file is not None:
            cert, key = _tls_certificate(home, ca_file)
            if as_owner:
                shutil.chown(key, "postgres")
            options += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}"
            hba = data / "pg_hba.conf"
            hba.write_text(hba.read_text().replace("\nhost ", "\nhostssl "))  # TCP logins only over TLS
        ctl = [*as_owner, str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-l", str(home / "log")]
        subprocess.run([*ctl, "-o", options, "-w", "start"], check=True, stdout=subprocess.DEVNULL)
        try:
            yield f"postgresql+psycopg://quayside@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*ctl, "-m", "immediate", "stop"], check=False, stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def libpq_url(url: str, password: str) -> str:
    """A `postgres()` SQLAlchemy URL as psycopg/libpq takes it, with the password."""
    return url.replace("postgresql+psycopg://", "postgresql://").replace("@", f":{password}@", 1)


class JsonApi:
    """State of a `json_api` server: its records per path, and faults to answer the next requests
    with (an HTTP status, optionally with headers, or ('sleep', seconds) for a slow answer)."""

    def __init__(self, records: dict[str, list[dict]], token: str, page_size: int):
        self.records, self.token, self.page_size = records, token, page_size
        self.faults: list[tuple] = []
        self.requests: list[str] = []
        self.url = ""


@contextmanager
def json_api(records: dict[str, list[dict]], token: str, page_size: int = 100) -> Iterator[JsonApi]:
    """A JSON API as suppliers run them: bearer-token auth, `?updated_since=` filtering on each
    record's `updated_at`, and pages of `page_size` records as `{"data": [...], "next_cursor": …}`
    reachable three ways: `Link: <…>; rel="next"` headers, `?cursor=`, or `?page=&per_page=`."""
    api = JsonApi(records, token, page_size)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: object = None, headers: dict | None = None) -> None:
            payload = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in ({"Content-Type": "application/json"} | (headers or {})).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            api.requests.append(self.path)
            if api.faults:
                fault = api.faults.pop(0)
                if fault[0] == "sleep":
                    time.sleep(fault[1])
                else:
                    return self._send(fault[0], {"data": [], "error": "injected"}, fault[1] if len(fault) > 1 else None)
            if self.headers.get("Authorization") != f"Bearer {api.token}":
                return self._send(401, {"error": "unauthorised"})
            url = urlsplit(self.path)
            rows = api.records.get(url.path.strip("/"))
            if rows is None:
                return self._send(404, {"error": "no such path"})
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            since = query.get("updated_since")
            rows = [r for r in rows if not since or r["updated_at"] > since]
            size = int(query.get("per_page", api.page_size))
            offset = int(query.get("offset") or query.get("cursor") or 0)
            if "page" in query:
                offset = (int(query["page"]) - 1) * size
            more = offset + size < len(rows)
            headers = {}
            if more:
                nxt = f"{url.path}?" + urlencode({"offset": offset + size} | ({"updated_since": since} if since else {}))
                headers["Link"] = f'<{nxt}>; rel="next"'
            self._send(200, {"data": rows[offset:offset + size], "next_cursor": str(offset + size) if more else None},
                       headers)

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:
            pass  # a client that timed out and hung up (tests do that on purpose) is no error here

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
