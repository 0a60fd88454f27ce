"""An Azure Blob Storage container (optionally a prefix in it) as a read-and-tidy Storage."""

from __future__ import annotations

import io
from collections.abc import Iterator

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from quayside.lake import FileInfo, Storage
from quayside.specs import check_relative_path


class _BlobReader(io.RawIOBase):
    """A blob download as a file object, streamed chunk by chunk (bounded memory)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._buffer = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n], self._buffer = self._buffer[:n], self._buffer[n:]
        return n


class AzureBlobStorage(Storage):
    def __init__(self, container: ContainerClient, prefix: str = ""):
        self.container = container
        self.prefix = check_relative_path(prefix.strip("/"), "prefix")
        self.root, self.uri_prefix = self.prefix, f"{container.url}/{self.prefix}".rstrip("/")
        self._s3 = None

    @property
    def atomic_writes(self) -> bool:
        return True  # a blob is visible only once committed

    def path(self, key: str) -> str:
        check_relative_path(key, "key")
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[FileInfo]:
        # Blob listings come back in name order but have no StartAfter: names up to the cursor
        # are skipped here, so a tick lists the prefix but hands out only what is new.
        check_relative_path(prefix, "prefix")
        strip = len(self.prefix) + 1 if self.prefix else 0
        for blob in self.container.list_blobs(name_starts_with=self.path(prefix) if prefix else self.prefix):
            key = blob.name[strip:]
            if key and key > start_after and not key.endswith("/"):
                yield FileInfo(key, blob.size, blob.last_modified)

    def info(self, key: str) -> FileInfo | None:
        try:
            props = self.container.get_blob_client(self.path(key)).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return FileInfo(key, props.size, props.last_modified)

    def open_stream(self, key: str):
        try:
            downloader = self.container.get_blob_client(self.path(key)).download_blob()
        except ResourceNotFoundError:
            raise FileNotFoundError(f"{self.uri_prefix}/{key}") from None
        return io.BufferedReader(_BlobReader(downloader.chunks()))

    def delete(self, key: str) -> None:
        self.container.get_blob_client(self.path(key)).delete_blob()

    def move(self, key: str, dest_key: str) -> None:
        with self.open_stream(key) as src:
            self.container.get_blob_client(self.path(dest_key)).upload_blob(src, overwrite=True)
        self.delete(key)

    def write(self, key: str, source) -> tuple[str, int]:
        raise PermissionError("sources are read-only: Quayside never writes into a supplier's container")
