"""A delivered file's data, as readers see it: decompressed by its extension (`.gz`, or a
`.zip` holding one file), while raw keeps the bytes as delivered.

Reading a file can fail because of the file (a corrupt archive, bytes no parser accepts) or
because of the storage under it (a bucket that stops answering). The first quarantines the
file; the second must fail the run, not quarantine a good file. Every read from storage here
goes through `_StorageReads`, which turns the storage's own errors into `StorageUnavailable`,
so that the two can be told apart whatever library sits between.
"""

from __future__ import annotations

import errno
import gzip
import io
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import BinaryIO

import pyarrow as pa

from quayside.lake import Storage

COMPRESSIONS = {".gz": "gzip", ".zip": "zip"}
SPOOL_BYTES = 8 << 20
UTF8_BOM = b"\xef\xbb\xbf"


class StorageUnavailable(Exception):
    """A read from storage failed: not the file's fault, and never a reason to quarantine it."""


class CorruptArchive(Exception):
    """A compressed file's archive is broken (truncated, bad checksum, not an archive at all)."""


def compression_of(key: str) -> str:
    """'gzip', 'zip' or '' (not compressed), from the file's extension."""
    return COMPRESSIONS.get(PurePosixPath(key).suffix.lower(), "")


class _StorageReads(io.RawIOBase):
    """A storage file (pyarrow NativeFile) whose read errors become StorageUnavailable."""

    def __init__(self, native, key: str):
        self._native, self._key = native, key

    @classmethod
    def opened(cls, storage: Storage, key: str, seekable: bool) -> _StorageReads:
        try:
            return cls(storage.open(key) if seekable else storage.open_stream(key), key)
        except Exception as exc:
            raise StorageUnavailable(f"opening {key!r} in storage failed: {exc}") from exc

    def _call(self, method, *args):
        try:
            return method(*args)
        except Exception as exc:
            raise StorageUnavailable(f"reading {self._key!r} from storage failed: {exc}") from exc

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._native.seekable()

    def read(self, size: int = -1) -> bytes:
        return self._call(self._native.read, None if size is None or size < 0 else size)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self._native.seek(offset, whence)
        except pa.ArrowInvalid as exc:  # a position before the start (a reader probing a short file), as io says it
            raise OSError(errno.EINVAL, f"{self._key!r}: {exc}") from None
        except Exception as exc:
            raise StorageUnavailable(f"reading {self._key!r} from storage failed: {exc}") from exc

    def tell(self) -> int:
        return self._call(self._native.tell)

    def close(self) -> None:
        self._native.close()
        super().close()


class _ArchiveReads(io.RawIOBase):
    """A decompressing stream whose archive errors become CorruptArchive (storage errors pass)."""

    ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile, NotImplementedError, RuntimeError)

    def __init__(self, stream: BinaryIO, close_also: list, what: str):
        self._stream, self._close_also, self._what = stream, close_also, what

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except self.ERRORS as exc:
            raise CorruptArchive(f"corrupt {self._what}: {exc}") from None

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        for closable in [self._stream, *self._close_also]:
            closable.close()
        super().close()


def open_data(storage: Storage, key: str, random_access: bool = False) -> BinaryIO:
    """The file's data as a stream (decompressed if its extension says so). `random_access`
    gives a seekable file of an uncompressed one (Parquet readers need it)."""
    compression = compression_of(key)
    raw = _StorageReads.opened(storage, key, seekable=compression == "zip" or (random_access and not compression))
    if not compression:
        return raw
    try:
        if compression == "gzip":
            return _ArchiveReads(gzip.GzipFile(fileobj=raw, mode="rb"), [raw], "gzip archive")
        archive = zipfile.ZipFile(raw)
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) != 1:
            raise CorruptArchive(f"zip archive holds {len(members)} files; one is expected")
        return _ArchiveReads(archive.open(members[0]), [archive, raw], f"zip archive (member {members[0].filename!r})")
    except _ArchiveReads.ERRORS as exc:
        raw.close()
        raise CorruptArchive(f"corrupt {compression} archive: {exc}") from None
    except BaseException:
        raw.close()
        raise


@contextmanager
def local_data(storage: Storage, key: str, without_bom: bool = False) -> Iterator[str]:
    """A path a reader (DuckDB, or a Parquet reader needing random access) can open: the file
    itself when it is not compressed, else its data decompressed to a temporary file, which is
    removed afterwards. Compressed files are decompressed here, never by DuckDB: it reads a
    truncated gzip file to where it breaks off without an error. `without_bom` drops a leading
    UTF-8 byte order mark, for readers that refuse one (DuckDB's JSON reader)."""
    if not compression_of(key) and not (without_bom and _starts_with_bom(storage, key)):
        yield storage.duckdb_path(key)
        return
    with tempfile.TemporaryDirectory(prefix="quayside-data-") as folder:
        path = f"{folder}/data"
        with open_data(storage, key) as data, open(path, "wb") as out:
            if without_bom:
                out.write(data.read(len(UTF8_BOM)).removeprefix(UTF8_BOM))
            shutil.copyfileobj(data, out, SPOOL_BYTES)
        yield path


def _starts_with_bom(storage: Storage, key: str) -> bool:
    with open_data(storage, key) as data:
        return data.read(len(UTF8_BOM)) == UTF8_BOM
