"""An SFTP server (a supplier's drop, or AWS Transfer Family) as a read-and-tidy Storage.

Security by default: key authentication only, and the server's host key must already be in the
pinned known_hosts file; an unknown or changed key is refused, never added. A dropped connection
is re-opened once per operation, so a long listing or copy resumes cleanly.
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TypeVar

import paramiko

from quayside.lake import FileInfo, Storage
from quayside.specs import check_relative_path

T = TypeVar("T")


class SftpError(Exception):
    pass


class SftpStorage(Storage):
    concurrent_reads = False  # one SSH connection, opened lazily: not shared between threads

    def __init__(self, host: str, port: int, username: str, private_key: paramiko.PKey, known_hosts: str,
                 root: str = ".", timeout: float = 20.0):
        self.host, self.port, self.username, self.key = host, port, username, private_key
        self.known_hosts, self.timeout = known_hosts, timeout
        self.root, self.uri_prefix = root.rstrip("/") or "/", f"sftp://{host}:{port}{root}"
        self._s3 = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # --- connection ---------------------------------------------------------------
    def _connect(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._client.get_transport() and self._client.get_transport().is_active():
            return self._sftp
        self.close()
        client = paramiko.SSHClient()
        client.load_host_keys(self.known_hosts)  # only these; never the user's own ~/.ssh/known_hosts
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        where = f"sftp://{self.username}@{self.host}:{self.port}"
        try:
            client.connect(self.host, port=self.port, username=self.username, pkey=self.key, timeout=self.timeout,
                           banner_timeout=self.timeout, auth_timeout=self.timeout, look_for_keys=False,
                           allow_agent=False)
        except paramiko.BadHostKeyException as exc:
            raise SftpError(f"{where}: host key CHANGED ({exc.key.get_name()} {exc.key.fingerprint}); refusing "
                            f"to connect. If the server was re-keyed on purpose, update {self.known_hosts}") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise SftpError(f"{where}: host key unknown, refusing to connect; pin it in {self.known_hosts} "
                                "(ssh-keyscan, checked against the supplier's published fingerprint)") from None
            raise SftpError(f"{where}: {exc}") from None
        except OSError as exc:
            raise SftpError(f"{where}: cannot connect: {exc}") from None
        self._client, self._sftp = client, client.open_sftp()
        self._sftp.get_channel().settimeout(self.timeout)
        return self._sftp

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._sftp = None

    def _retry(self, action: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run `action`; if the connection dropped, reconnect and run it once more."""
        try:
            return action(self._connect())
        except (EOFError, paramiko.SSHException, ConnectionError, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            self.close()
            return action(self._connect())

    # --- Storage ------------------------------------------------------------------
    @property
    def atomic_writes(self) -> bool:
        return False  # an upload in progress is visible: take files only once their size is stable

    def path(self, key: str) -> str:
        check_relative_path(key, "key")
        return posixpath.join(self.root, key) if key else self.root

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[FileInfo]:
        check_relative_path(prefix, "prefix")
        top = prefix if prefix.endswith("/") or not prefix else posixpath.dirname(prefix)

        def walk(folder: str) -> Iterator[FileInfo]:
            try:
                entries = sorted(self._retry(lambda sftp: sftp.listdir_attr(self.path(folder))),
                                 key=lambda e: e.filename)
            except FileNotFoundError:
                return
            for entry in entries:
                name = entry.filename
                if name in (".", "..") or "/" in name or "\\" in name or name.startswith(".quayside-tmp-"):
                    continue  # a server may send anything: never follow names that leave the folder
                key = posixpath.join(folder, name) if folder else name
                if stat.S_ISDIR(entry.st_mode or 0):
                    if start_after and key < start_after and not start_after.startswith(key + "/"):
                        continue
                    yield from walk(key)
                elif stat.S_ISREG(entry.st_mode or 0) and key.startswith(prefix) and key > start_after:
                    yield FileInfo(key, entry.st_size or 0, datetime.fromtimestamp(entry.st_mtime or 0, timezone.utc))

        yield from walk(top.rstrip("/"))

    def info(self, key: str) -> FileInfo | None:
        try:
            st = self._retry(lambda sftp: sftp.stat(self.path(key)))
        except FileNotFoundError:
            return None
        return FileInfo(key, st.st_size or 0, datetime.fromtimestamp(st.st_mtime or 0, timezone.utc))

    def open_stream(self, key: str):
        handle = self._retry(lambda sftp: sftp.open(self.path(key), "rb"))
        handle.prefetch()
        return handle

    def delete(self, key: str) -> None:
        self._retry(lambda sftp: sftp.remove(self.path(key)))

    def move(self, key: str, dest_key: str) -> None:
        target = self.path(dest_key)

        def rename(sftp: paramiko.SFTPClient) -> None:
            folder = posixpath.dirname(target)
            missing = []
            while folder not in ("", "/", self.root):
                try:
                    sftp.stat(folder)
                    break
                except FileNotFoundError:
                    missing.append(folder)
                    folder = posixpath.dirname(folder)
            for folder in reversed(missing):
                sftp.mkdir(folder)
            sftp.posix_rename(self.path(key), target)

        self._retry(rename)

    def write(self, key: str, source) -> tuple[str, int]:
        raise SftpError("sources are read-only: Quayside never writes to a supplier's SFTP server")
