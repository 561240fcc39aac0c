"""Storages: local paths stay in the client's area; S3 against a real S3-compatible server (moto's
server mode, started here), with a whole workflow reading from and writing to it."""

from __future__ import annotations

import logging
import socket

import boto3
import pytest

from jobs.workflows.registry import PermanentError
from media import storage
from media.selectors import job_key_documents
from tests.media.conftest import FPS, decode, make_ctx, run_workflow, with_local_key

BUCKET = "media-tests"


def test_local_paths_cannot_leave_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("secret")
    local = storage.LocalStorage(root)
    assert local.path("/in/a.mp4") == (root / "in/a.mp4").resolve()
    for escaping in ("../secret.txt", "in/../../secret.txt", "in\\..\\..\\secret.txt"):
        with pytest.raises(PermanentError):
            local.path(escaping)
    # A symlink inside the root that points out of it is refused too, for reading and listing.
    (root / "in/link").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(PermanentError, match=r"leads out of the client's storage area"):
        local.download("in/link", tmp_path / "copy")
    with pytest.raises(PermanentError, match=r"leads out of the client's storage area"):
        local.list_files("in")


def test_local_round_trip_and_listing(tmp_path):
    local = storage.LocalStorage(tmp_path)
    local.write_bytes("a/b/c.m3u8", b"#EXTM3U\n")
    local.write_bytes("a/d.ts", b"x" * 10)
    assert local.list_files("a") == ["b/c.m3u8", "d.ts"]
    assert local.size("a/d.ts") == 10 and local.size("a/missing") is None
    assert local.read_bytes("a/b/c.m3u8") == b"#EXTM3U\n"
    assert not list(tmp_path.rglob("*.partial"))


def test_unknown_storage_is_refused(tmp_path):
    ctx = make_ctx("vodstream", {"source_storage": "azure_blob"}, tmp_path)
    with pytest.raises(PermanentError, match="not supported"):
        storage.source_storage(ctx)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    # One line per request would bury a failure's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, settings):
    """The TASKENGINE_S3_* settings pointing at the server, and a boto3 client on a fresh bucket."""
    settings.TASKENGINE_S3_ENDPOINT_URL = s3_server
    settings.TASKENGINE_S3_BUCKET = BUCKET
    settings.TASKENGINE_S3_ACCESS_KEY_ID = "testing"
    settings.TASKENGINE_S3_SECRET_ACCESS_KEY = "testing"
    settings.TASKENGINE_S3_REGION = "us-east-1"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def test_s3_needs_a_bucket(settings):
    settings.TASKENGINE_S3_BUCKET = ""
    with pytest.raises(PermanentError, match="TASKENGINE_S3_BUCKET"):
        storage.S3MediaStorage("acme")


def test_s3_storage_operations(s3, tmp_path):
    remote = storage.S3MediaStorage("acme")
    remote.write_bytes("/a/b.m3u8", b"#EXTM3U\n")
    (tmp_path / "seg.ts").write_bytes(b"x" * 100)
    remote.upload(tmp_path / "seg.ts", "a/c/seg.ts")
    assert remote.list_files("a") == ["b.m3u8", "c/seg.ts"]
    assert remote.size("a/c/seg.ts") == 100 and remote.size("a/none") is None
    # Every key lies in the client's area of the bucket.
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == ["acme/a/b.m3u8", "acme/a/c/seg.ts"]
    head = s3.head_object(Bucket=BUCKET, Key="acme/a/b.m3u8")
    assert head["ContentType"] == "application/vnd.apple.mpegurl"
    with pytest.raises(PermanentError, match="does not exist"):
        storage.stage(remote, "a/none", tmp_path / "none")


def test_s3_areas_lie_under_the_prefix_and_never_meet(s3, tmp_path, settings):
    settings.TASKENGINE_S3_PREFIX = "/tenants/"
    acme, other = storage.S3MediaStorage("acme"), storage.S3MediaStorage("other")
    acme.write_bytes("vod/a.txt", b"acme's")
    other.write_bytes("vod/a.txt", b"other's")
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == ["tenants/acme/vod/a.txt", "tenants/other/vod/a.txt"]
    assert acme.read_bytes("vod/a.txt") == b"acme's" and acme.list_files("vod") == ["a.txt"]
    for escaping in ("../other/vod/a.txt", "vod/../../other/vod/a.txt"):
        with pytest.raises(PermanentError, match=r"'\.\.'"):
            acme.read_bytes(escaping)
    with pytest.raises(PermanentError, match="cannot name a storage area"):
        storage.S3MediaStorage("../other")


@pytest.mark.django_db
def test_vodstream_from_s3_to_s3(s3, media_cache, tmp_path, area_job):
    s3.upload_file(str(media_cache(4)), BUCKET, "media-tests/incoming/ep/source.mp4")
    parameters = {
        "content_id": "ep",
        "source_folder": "incoming/ep",
        "output_folder": "vod/ep",
        "source_storage": "S3",
        "destination_storage": "S3",
        "drm": "aes",
        "key_uri": "https://keys.example.com/ep",
        "renditions": 1,
        "segment_duration": 1,
        "video_preset": "ultrafast",
        "thumbnail_time": 1,
    }
    unused_area = tmp_path / "unused-local-root" / "media-tests"
    job = area_job(unused_area, parameters)
    results = run_workflow("vodstream", parameters, unused_area, job_id=job.pk)
    final = results["publish_outputs"]
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="media-tests/vod/")["Contents"]
    keys = sorted(item["Key"].removeprefix("media-tests/") for item in listing)
    assert sorted(final["files"]) == keys
    assert {"vod/ep/ep.m3u8", "vod/ep/ep.jpg", "vod/ep/ep_video_360p.m3u8"} <= set(keys)
    # The content key is not published with the content: no key or key-info object in the bucket.
    assert not [key for key in keys if key.endswith((".key", ".keyinfo", ".json"))]
    assert not (tmp_path / "unused-local-root").exists()
    # What a player would fetch from the bucket plays from start to end with the key the client is given.
    local = tmp_path / "download"
    for key in keys:
        target = local / key
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(BUCKET, f"media-tests/{key}", str(target))
    (document,) = job_key_documents(job_id=job.pk)
    content_key = bytes.fromhex(document["key_hex"])
    assert all(content_key not in path.read_bytes() for path in local.rglob("*") if path.is_file())
    player = with_local_key(local / "vod/ep", parameters["key_uri"], content_key, tmp_path / "player")
    (video,) = decode(player / "ep.m3u8", allowed_extensions="ALL")["video"]
    assert video["frames"] == 4 * FPS and video["size"] == (640, 360)


@pytest.mark.django_db
def test_the_shared_s3_layout_moves_into_the_clients_area(s3, make_client):
    from django.core.management import call_command

    make_client("acme")
    make_client("other")
    for key in ("vod/ep/ep.m3u8", "vod/ep/seg.ts", "other/theirs.mp4"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    call_command("storage_move_to_client", "acme", "--storage", "s3")
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == ["acme/vod/ep/ep.m3u8", "acme/vod/ep/seg.ts", "other/theirs.mp4"]
    assert s3.get_object(Bucket=BUCKET, Key="acme/vod/ep/seg.ts")["Body"].read() == b"vod/ep/seg.ts"
