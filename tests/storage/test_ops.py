"""The storage API, run unchanged over `file://` and `s3://` (moto over HTTP) via `storage_root`."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_rayops import storage
from airflow_provider_rayops.storage import S3Settings, StorageError, StorageNotFoundError, join_uri
from tests.fixtures.s3 import S3_BUCKET, S3_SECRET_KEY


class WriterCrashed(RuntimeError):
    pass


def test_written_bytes_read_back(storage_root: str) -> None:
    uri = join_uri(storage_root, "a", "b", "blob.bin")
    storage.write_bytes(uri, b"\x00hello\xff")
    assert storage.read_bytes(uri) == b"\x00hello\xff"


def test_write_replaces_previous_content(storage_root: str) -> None:
    uri = join_uri(storage_root, "blob.bin")
    storage.write_bytes(uri, b"first")
    storage.write_bytes(uri, b"second")
    assert storage.read_bytes(uri) == b"second"


def test_reading_a_missing_object_names_it(storage_root: str) -> None:
    uri = join_uri(storage_root, "missing.bin")
    with pytest.raises(StorageNotFoundError) as err:
        storage.read_bytes(uri)
    assert err.value.uri == uri
    assert uri in str(err.value)


def test_exists_only_for_written_objects(storage_root: str) -> None:
    uri = join_uri(storage_root, "x.txt")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"x")
    assert storage.exists(uri)
    assert not storage.exists(storage_root)  # a folder is not an object


def test_listing_is_recursive_sorted_and_stays_inside_the_folder(storage_root: str) -> None:
    for name in ["snaps/b/2.txt", "snaps/a.txt", "snaps/b/1.txt", "snapshots-old/z.txt"]:
        storage.write_bytes(join_uri(storage_root, name), b".")
    assert storage.list_uris(join_uri(storage_root, "snaps")) == [
        join_uri(storage_root, "snaps/a.txt"),
        join_uri(storage_root, "snaps/b/1.txt"),
        join_uri(storage_root, "snaps/b/2.txt"),
    ]


def test_listing_a_missing_folder_is_empty(storage_root: str) -> None:
    assert storage.list_uris(join_uri(storage_root, "nothing-here")) == []


def test_a_folder_downloads_with_the_paths_below_it(storage_root: str, tmp_path) -> None:
    for name in ["ckpt/model.json", "ckpt/extra_files/encoder.json", "ckpt-old/model.json"]:
        storage.write_bytes(join_uri(storage_root, name), name.encode())
    local = tmp_path / "local"
    written = storage.download_folder(join_uri(storage_root, "ckpt"), local)
    assert written == [str(local / "extra_files" / "encoder.json"), str(local / "model.json")]
    assert (local / "extra_files" / "encoder.json").read_bytes() == b"ckpt/extra_files/encoder.json"
    assert storage.download_folder(join_uri(storage_root, "nothing-here"), tmp_path / "empty") == []


def test_delete_reports_whether_something_was_deleted(storage_root: str) -> None:
    uri = join_uri(storage_root, "gone.txt")
    storage.write_bytes(uri, b"x")
    assert storage.delete(uri) is True
    assert not storage.exists(uri)
    assert storage.delete(uri) is False


def test_failing_writer_leaves_nothing_under_the_final_name(storage_root: str) -> None:
    uri = join_uri(storage_root, "model.bin")
    with pytest.raises(WriterCrashed), storage.open_write(uri) as fh:
        fh.write(b"half of a model")
        raise WriterCrashed
    assert not storage.exists(uri)
    assert storage.list_uris(storage_root) == []  # no temporary file left either


def test_failing_writer_keeps_the_previous_version(storage_root: str) -> None:
    uri = join_uri(storage_root, "model.bin")
    storage.write_bytes(uri, b"v1")
    with pytest.raises(WriterCrashed), storage.open_write(uri) as fh:
        fh.write(b"v2 half")
        raise WriterCrashed
    assert storage.read_bytes(uri) == b"v1"
    assert storage.list_uris(storage_root) == [uri]


def test_large_write_round_trips_and_fails_atomically(storage_root: str) -> None:
    # Over the 5 MiB part size: s3 goes through a multipart upload.
    data = bytes(range(256)) * (6 * 1024 * 4)
    uri = join_uri(storage_root, "big.bin")
    with pytest.raises(WriterCrashed), storage.open_write(uri) as fh:
        fh.write(data)
        raise WriterCrashed
    assert not storage.exists(uri)
    with storage.open_write(uri) as fh:
        fh.write(data)
    assert storage.read_bytes(uri) == data


def test_writing_to_a_folder_uri_is_refused(storage_root: str) -> None:
    with pytest.raises(StorageError, match="name an object"):
        storage.write_bytes(storage_root + "/", b"x")


def test_pyarrow_reads_what_storage_wrote_through_filesystem(storage_root: str) -> None:
    table = pa.table({"tenure": [1, 2, 3], "plan": ["a", "b", "a"]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    uri = join_uri(storage_root, "data", "part-0.parquet")
    storage.write_bytes(uri, sink.getvalue())

    fs, path = storage.filesystem(uri)
    assert pq.read_table(path, filesystem=fs).equals(table)
    folder_fs, folder = storage.filesystem(join_uri(storage_root, "data"))
    assert pq.read_table(folder, filesystem=folder_fs).column("tenure").to_pylist() == [1, 2, 3]


def test_storage_reads_what_pyarrow_wrote_through_filesystem(storage_root: str) -> None:
    uri = join_uri(storage_root, "out.parquet")
    fs, path = storage.filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(pa.table({"x": [1.5]}), path, filesystem=fs)
    assert pq.read_table(io.BytesIO(storage.read_bytes(uri))).column("x").to_pylist() == [1.5]


def test_relative_file_uri_resolves_against_the_current_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage.write_bytes("file://data/x.txt", b"rel")
    assert (tmp_path / "data" / "x.txt").read_bytes() == b"rel"
    assert storage.list_uris("file://data") == [f"file://{tmp_path}/data/x.txt"]


def test_s3_objects_are_real_objects_to_another_client(s3_endpoint) -> None:
    import boto3

    storage.write_bytes(f"s3://{S3_BUCKET}/cross-client/obj.txt", b"seen by boto3")
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint.endpoint_url,
        aws_access_key_id=s3_endpoint.access_key,
        aws_secret_access_key=s3_endpoint.secret_key,
        region_name=s3_endpoint.region,
    )
    assert s3.get_object(Bucket=S3_BUCKET, Key="cross-client/obj.txt")["Body"].read() == b"seen by boto3"


def test_explicit_settings_win_over_the_environment(s3_endpoint, monkeypatch) -> None:
    monkeypatch.setenv("RAYOPS_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    uri = f"s3://{S3_BUCKET}/explicit/obj.txt"
    storage.write_bytes(uri, b"ok", settings=s3_endpoint)
    assert storage.read_bytes(uri, settings=s3_endpoint) == b"ok"


def test_missing_bucket_is_not_found_and_the_error_keeps_secrets_out(s3_endpoint) -> None:
    uri = "s3://no-such-bucket/x.txt"
    with pytest.raises(StorageNotFoundError, match="no such bucket") as err:
        storage.read_bytes(uri)
    assert err.value.uri == uri
    assert S3_SECRET_KEY not in str(err.value)
    assert s3_endpoint.access_key not in str(err.value)


# --- s3:// through pyarrow: how its failures become ours (real moto server, real pyarrow) -----------


def test_reading_a_folder_uri_is_not_found(storage_root: str) -> None:
    storage.write_bytes(join_uri(storage_root, "folder", "x.txt"), b"x")
    with pytest.raises(StorageNotFoundError):
        storage.read_bytes(join_uri(storage_root, "folder") + "/")


def test_deleting_the_last_object_of_a_folder_leaves_nothing_listed(storage_root: str) -> None:
    # pyarrow leaves an empty `folder/` marker object behind on s3: not an object to this API.
    uri = join_uri(storage_root, "folder", "only.txt")
    storage.write_bytes(uri, b"x")
    assert storage.delete(uri) is True
    assert storage.list_uris(storage_root) == []
    assert not storage.exists(join_uri(storage_root, "folder"))
    assert not storage.exists(join_uri(storage_root, "folder") + "/")
    if storage_root.startswith("s3://"):  # (file:// raises IsADirectoryError here, as it always has)
        assert storage.delete(join_uri(storage_root, "folder") + "/") is False


def test_write_past_the_spool_size_round_trips_and_fails_atomically(s3_endpoint, monkeypatch) -> None:
    # Past the spool size the bytes sit in a local file and are uploaded from a memory map.
    monkeypatch.setattr("airflow_provider_rayops.storage.ops._SPOOL_BYTES", 1024 * 1024)
    data = bytes(range(256)) * (3 * 1024 * 4)  # 3 MiB
    uri = f"s3://{S3_BUCKET}/spilled/big.bin"
    with pytest.raises(WriterCrashed), storage.open_write(uri) as fh:
        fh.write(data)
        raise WriterCrashed
    assert not storage.exists(uri)
    with storage.open_write(uri) as fh:
        fh.write(data[:1000])
        fh.write(data[1000:])
    assert storage.read_bytes(uri) == data


@pytest.mark.parametrize("size", [10, 12 * 1024 * 1024], ids=["one-put", "multipart"])
def test_writing_into_a_missing_bucket_is_not_found_and_names_the_uri(s3_endpoint, size: int) -> None:
    # pyarrow: "AWS Error NO_SUCH_BUCKET during PutObject / CreateMultipartUpload operation".
    uri = "s3://no-such-bucket/model.bin"
    with pytest.raises(StorageNotFoundError, match="no such bucket") as err:
        storage.write_bytes(uri, b"x" * size)
    assert err.value.uri == uri
    assert S3_SECRET_KEY not in str(err.value)


def test_a_missing_bucket_lists_as_not_found_exists_and_deletes_as_false(s3_endpoint) -> None:
    with pytest.raises(StorageNotFoundError, match="no such bucket"):
        storage.list_uris("s3://no-such-bucket/snaps")
    assert storage.exists("s3://no-such-bucket/x.txt") is False
    assert storage.delete("s3://no-such-bucket/x.txt") is False


@pytest.mark.parametrize(
    "operation",
    [
        lambda uri, s: storage.read_bytes(uri, settings=s),
        lambda uri, s: storage.write_bytes(uri, b"x", settings=s),
        lambda uri, s: storage.exists(uri, settings=s),
        lambda uri, s: storage.list_uris(uri, settings=s),
        lambda uri, s: storage.delete(uri, settings=s),
    ],
    ids=["read", "write", "exists", "list", "delete"],
)
def test_an_unreachable_endpoint_is_a_storage_error_with_the_uri_and_no_secrets(operation) -> None:
    # Nothing listens on port 9: pyarrow's "AWS Error NETWORK_CONNECTION during <Operation> ...".
    dead = S3Settings(endpoint_url="http://127.0.0.1:9", access_key="ak-unreachable", secret_key=S3_SECRET_KEY)
    uri = "s3://rayops-test/unreachable/x.txt"
    with pytest.raises(StorageError) as err:
        operation(uri, dead)
    assert not isinstance(err.value, StorageNotFoundError)
    assert err.value.uri == uri
    assert err.value.problem.startswith("S3 error NETWORK_CONNECTION during ")
    assert "Request ID" not in str(err.value)
    assert S3_SECRET_KEY not in str(err.value)
    assert "ak-unreachable" not in str(err.value)


def test_a_key_that_shows_up_in_an_error_text_is_masked() -> None:
    # Contrived on purpose: the "secret" is the AWS SDK's name for a refused connection, so that
    # pyarrow's real error text contains it.
    dead = S3Settings(endpoint_url="http://127.0.0.1:9", access_key="ak", secret_key="NETWORK_CONNECTION")
    with pytest.raises(StorageError) as err:
        storage.exists("s3://rayops-test/x.txt", settings=dead)
    assert "NETWORK_CONNECTION" not in str(err.value)
    assert err.value.problem.startswith("S3 error *** during HeadObject: ")
