"""Storage zones: ordered listing with StartAfter, atomic writes, path safety, tables listing."""

from __future__ import annotations

import gzip
import hashlib

import pyarrow as pa
import pytest

from quayside.lake import CopyMismatch, zone_of
from quayside.lake import _ReadBehind as ReadBehind


def test_listing_is_ordered_and_resumes_after_a_key(local_lake):
    for key in ["d/b/2.csv", "d/a/1.csv", "d/c/3.csv", "other/x.csv", "d/a/0.csv"]:
        local_lake.landing.write(key, b"x")
    assert [f.key for f in local_lake.landing.list("d/")] == ["d/a/0.csv", "d/a/1.csv", "d/b/2.csv", "d/c/3.csv"]
    assert [f.key for f in local_lake.landing.list("d/", "d/a/1.csv")] == ["d/b/2.csv", "d/c/3.csv"]


def test_writes_are_atomic_and_hashed(local_lake):
    sha, size = local_lake.raw.write("a/b.csv", b"hello")
    assert size == 5 and sha == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert local_lake.raw.sha256("a/b.csv") == sha
    leftovers = [f.key for f in local_lake.raw.list("") if "tmp" in f.key]
    assert leftovers == []


def test_compressed_files_are_kept_byte_for_byte(local_lake):
    # pyarrow's streams (de)compress by file extension unless told not to: raw must be the bytes received
    data = gzip.compress(b"id,name\n1,a\n")
    sha, _ = local_lake.landing.write("drop/a.csv.gz", data)
    assert sha == hashlib.sha256(data).hexdigest() == local_lake.landing.sha256("drop/a.csv.gz")
    assert local_lake.raw.copy_from(local_lake.landing, "drop/a.csv.gz", "x/a.csv.gz", read_back=True)[0] == sha
    assert local_lake.raw.read_bytes("x/a.csv.gz") == data


def test_reading_behind_a_writer_hashes_what_is_on_disk(tmp_path):
    path = tmp_path / "copy"
    with open(path, "wb", buffering=0) as out, ReadBehind(str(path)) as behind:
        written = 0
        for part in [b"abc" * 1000, b"def" * 5000]:
            out.write(part)
            written += len(part)
            behind.follow(written)
        assert behind.hexdigest() == hashlib.sha256(b"abc" * 1000 + b"def" * 5000).hexdigest()
    with open(path, "r+b") as damaged:
        damaged.truncate(100)
    with ReadBehind(str(path)) as behind, pytest.raises(CopyMismatch, match="shorter than written"):
        behind.follow(18000)
        behind.hexdigest()


@pytest.mark.parametrize("key", ["../escape.csv", "a/../../escape.csv", "/etc/passwd"])
def test_keys_cannot_escape_the_zone(local_lake, key):
    with pytest.raises(ValueError):
        local_lake.landing.write(key, b"x")


def test_tables_lists_zone_rows_and_update_time(local_lake):
    table = local_lake.create_table("staged_demo", "t", pa.schema([("id", pa.int64())]))
    table.append(pa.table({"id": [1, 2, 3]}))
    (info,) = local_lake.tables()
    assert (info.zone, info.namespace, info.name, info.rows) == ("staged", "staged_demo", "t", 3)
    assert set(info.as_dict()) == {"zone", "namespace", "name", "rows", "updated_at"}
    assert local_lake.connect().sql("SELECT sum(id) FROM staged_demo.t").fetchone() == (6,)


def test_tables_get_the_write_defaults_even_when_made_before_them(local_lake):
    schema = pa.schema([("id", pa.int64())])
    created = local_lake.create_table("staged_demo", "new", schema)
    assert created.properties["write.parquet.dict-size-bytes"] == str(512 * 1024)
    own = local_lake.create_table("staged_demo", "own", schema, properties={"write.parquet.dict-size-bytes": "1024"})
    assert own.properties["write.parquet.dict-size-bytes"] == "1024"  # a table's own setting wins
    local_lake.catalog.create_table(("staged_demo", "older"), schema=schema)  # as an earlier version made it
    older = local_lake.create_table("staged_demo", "older", schema)
    assert older.properties["write.parquet.dict-size-bytes"] == str(512 * 1024)
    assert local_lake.load_table("staged_demo", "older").properties == older.properties


def test_namespaces_and_table_names_are_validated(local_lake):
    with pytest.raises(ValueError):
        local_lake.create_table("staged; drop table x", "t", pa.schema([("id", pa.int64())]))
    with pytest.raises(ValueError):
        local_lake.load_table("staged", "t' or 1=1")


def test_zone_of_namespace():
    assert [zone_of(n) for n in ["staged_courts", "raw", "quarantine", "curated_prisons"]] == [
        "staged", "raw", "quarantine", "curated"]
