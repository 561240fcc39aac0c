"""Storage steps, tested for their effect on disk: drmswitch (get_filenames, prepare_switch,
rename_manifests), delete_folder (voddelete) and delete_files (asset_delete)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from jobs.workflows.registry import PermanentError, StepContext, get_step


@pytest.fixture
def root(tmp_path, settings):
    """The storage area of the client ``acme`` whose jobs these tests run."""
    storage = tmp_path / "storage"
    (storage / "acme").mkdir(parents=True)
    settings.TASKENGINE_STORAGE_ROOT = storage
    return storage / "acme"


@pytest.fixture
def logged():
    """The lines the steps wrote to their job log."""
    return []


@pytest.fixture
def run(root, settings, logged):
    """``run(step, **parameters)``: call a registered step with a context, as the runner would."""

    def call(name: str, *, results: dict[str, Any] | None = None, **parameters: Any) -> Any:
        ctx = StepContext(
            job_id=1,
            task_id=1,
            client_name="acme",
            workflow="test",
            job_parameters=parameters,
            step_parameters={},
            results=results or {},
            log=lambda message, severity=1: logged.append(message),
            heartbeat=lambda progress=None: None,
            storage_root=Path(settings.TASKENGINE_STORAGE_ROOT),
        )
        return get_step(name).fn(ctx)

    return call


def vod(root: Path, folder: str = "vod/c-42", *, published: str = "clear") -> Path:
    """A VOD folder with HLS and DASH manifests, one variant published and the other parked."""
    path = root / folder
    path.mkdir(parents=True)
    parked = "drm" if published == "clear" else "clear"
    for name, ext in (("index", "m3u8"), ("index", "mpd")):
        (path / f"{name}.{ext}").write_text(f"{published} {ext}")
        (path / f"{name}.{parked}.{ext}").write_text(f"{parked} {ext}")
    (path / "video_1.m3u8").write_text("media playlist")  # shared by both variants
    (path / "segment_1.ts").write_bytes(b"\x00" * 10)
    return path


def contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.suffix in (".m3u8", ".mpd")}


def drmswitch(run, **parameters: Any) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in ("get_filenames", "prepare_switch", "rename_manifests"):
        results[name] = run(name, results=dict(results), **parameters)
    return results


def test_get_filenames_lists_manifests_and_their_state(root, run):
    vod(root)
    result = run("get_filenames", folder="vod/c-42")
    assert result == {
        "folder": "vod/c-42",
        "manifests": [
            {"name": "index.m3u8", "state": "clear"},
            {"name": "index.mpd", "state": "clear"},
            {"name": "video_1.m3u8", "state": "single"},
        ],
    }


def test_switching_to_drm_publishes_the_drm_manifests_and_parks_the_clear_ones(root, run, logged):
    folder = vod(root)
    results = drmswitch(run, folder="vod/c-42", drm=["widevine", "playready"])
    assert contents(folder) == {
        "index.clear.m3u8": "clear m3u8",
        "index.clear.mpd": "clear mpd",
        "index.m3u8": "drm m3u8",
        "index.mpd": "drm mpd",
        "video_1.m3u8": "media playlist",
    }
    assert results["prepare_switch"]["switch"] == ["index.m3u8", "index.mpd"]
    assert results["rename_manifests"] == {
        "target": "drm",
        "renamed": ["index.m3u8", "index.mpd"],
        "files": ["vod/c-42/index.m3u8", "vod/c-42/index.mpd"],
    }
    assert (folder / "segment_1.ts").exists()
    assert logged == [
        "Found 3 manifests: index.m3u8, index.mpd, video_1.m3u8",
        "Switching 2 manifests to drm (clear parked)",
        "Renamed index.drm.m3u8 to index.m3u8",
        "Renamed index.drm.mpd to index.mpd",
        "2 manifests switched to drm",
    ]


def test_switching_back_to_clear_restores_the_original_layout(root, run):
    folder = vod(root)
    before = contents(folder)
    drmswitch(run, folder="vod/c-42", drm=["widevine"])
    drmswitch(run, folder="vod/c-42", drm=["clear"])
    assert contents(folder) == before


def test_a_retry_of_rename_manifests_is_idempotent(root, run):
    folder = vod(root)
    results = drmswitch(run, folder="vod/c-42", drm=["fairplay"])
    after = contents(folder)
    again = run("rename_manifests", results=results, folder="vod/c-42", drm=["fairplay"])
    assert contents(folder) == after
    assert again["renamed"] == []
    assert again["files"] == ["vod/c-42/index.m3u8", "vod/c-42/index.mpd"]


def test_a_switch_interrupted_between_its_two_renames_completes_on_retry(root, run):
    folder = vod(root)
    plan = {"prepare_switch": run("prepare_switch", folder="vod/c-42", drm=["cenc"])}
    os.link(folder / "index.m3u8", folder / "index.clear.m3u8")  # the crash came after the first step
    assert run("get_filenames", folder="vod/c-42")["manifests"][0] == {
        "name": "index.m3u8",
        "state": "switching",
    }
    run("rename_manifests", results=plan, folder="vod/c-42", drm=["cenc"])
    assert contents(folder)["index.m3u8"] == "drm m3u8"
    assert contents(folder)["index.clear.m3u8"] == "clear m3u8"
    assert "index.drm.m3u8" not in contents(folder)


def test_an_already_switched_folder_plans_nothing_to_rename(root, run):
    folder = vod(root, published="drm")
    results = drmswitch(run, folder="vod/c-42", drm=["widevine"])
    assert results["prepare_switch"]["switch"] == []
    assert results["prepare_switch"]["already"] == ["index.m3u8", "index.mpd"]
    assert contents(folder)["index.m3u8"] == "drm m3u8"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"drm": []}, "drm: a list"),
        ({"drm": ["clear", "widevine"]}, "drm: 'clear' cannot be combined"),
        ({"drm": ["rot13"]}, "drm: unknown DRM systems ['rot13']"),
        ({"drm": "widevine", "folder": "vod/missing"}, "folder: 'missing' does not exist"),
        ({"drm": ["widevine"], "folder": "../outside"}, "folder: '../outside' must not contain '..'"),
        (
            {"drm": ["widevine"], "folder": "/etc"},
            "folder: '/etc' must be relative to the client's storage area",
        ),
        ({"drm": ["widevine"], "folder": "."}, "folder: the storage area itself cannot be used"),
        ({"drm": ["widevine"], "source_storage": "S3"}, "storage 'S3' is not supported"),
    ],
)
def test_prepare_switch_refuses_bad_parameters(root, run, parameters, message):
    vod(root)
    with pytest.raises(PermanentError) as excinfo:
        run("prepare_switch", **({"folder": "vod/c-42"} | parameters))
    assert str(excinfo.value).startswith(message)


def test_a_missing_published_manifest_is_refused_before_anything_is_renamed(root, run):
    folder = vod(root)
    (folder / "index.mpd").unlink()
    before = contents(folder)
    with pytest.raises(PermanentError) as excinfo:
        run("prepare_switch", folder="vod/c-42", drm=["widevine"])
    assert str(excinfo.value) == "index.mpd: the published manifest is missing"
    assert contents(folder) == before


def test_an_interrupted_switch_the_other_way_is_settled(root, run):
    folder = vod(root, published="drm")
    os.link(folder / "index.m3u8", folder / "index.drm.m3u8")  # a switch to clear stopped after step 1
    plan = {"prepare_switch": run("prepare_switch", folder="vod/c-42", drm=["widevine"])}
    assert plan["prepare_switch"]["switch"] == ["index.m3u8"]
    result = run("rename_manifests", results=plan, folder="vod/c-42", drm=["widevine"])
    assert result["renamed"] == []
    assert contents(folder)["index.m3u8"] == "drm m3u8"
    assert contents(folder)["index.clear.m3u8"] == "clear m3u8"
    assert "index.drm.m3u8" not in contents(folder)


def test_both_parked_variants_make_the_state_ambiguous(root, run):
    folder = vod(root)
    (folder / "index.clear.m3u8").write_text("another clear")
    with pytest.raises(PermanentError) as excinfo:
        run("prepare_switch", folder="vod/c-42", drm=["widevine"])
    assert "cannot tell which one is published" in str(excinfo.value)
    assert (folder / "index.m3u8").read_text() == "clear m3u8"


def test_a_folder_without_manifests_is_refused(root, run):
    (root / "empty").mkdir()
    with pytest.raises(PermanentError):
        run("get_filenames", folder="empty")


def test_a_symlink_escaping_the_root_is_refused(root, run, tmp_path):
    outside = tmp_path / "outside"
    vod(tmp_path, "outside")
    (root / "link").symlink_to(outside)
    with pytest.raises(PermanentError) as excinfo:
        run("get_filenames", folder="link")
    assert "symbolic link" in str(excinfo.value)
    with pytest.raises(PermanentError) as excinfo:
        run("get_filenames", folder="link/inner")
    assert "outside the client's storage area" in str(excinfo.value)
    assert (outside / "index.m3u8").read_text() == "clear m3u8"


def test_delete_folder_removes_the_folder_and_only_it(root, run):
    vod(root, "vod/a")
    vod(root, "vod/b")
    result = run("delete_folder", folder="vod/a")
    assert result == {"deleted": True, "folder": "vod/a", "file_count": 6}
    assert not (root / "vod/a").exists()
    assert (root / "vod/b/index.m3u8").exists()
    # A retry after success finds nothing to do and succeeds.
    assert run("delete_folder", folder="vod/a") == {"deleted": False, "folder": "vod/a"}


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("..", "must not contain '..'"),
        ("vod/../..", "must not contain '..'"),
        ("/tmp", "must be relative"),
        ("", "a relative path is required"),
        (".", "the storage area itself"),
        ("vod/file.txt", "is not a folder"),
    ],
)
def test_delete_folder_refuses_paths_outside_or_at_the_root(root, run, folder, message):
    (root / "vod").mkdir()
    (root / "vod/file.txt").write_text("x")
    with pytest.raises(PermanentError) as excinfo:
        run("delete_folder", folder=folder)
    assert message in str(excinfo.value)
    assert (root / "vod/file.txt").exists()


def test_delete_folder_will_not_follow_a_symlink_out(root, run, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (root / "link").symlink_to(outside)
    with pytest.raises(PermanentError):
        run("delete_folder", folder="link")
    assert (outside / "keep.txt").exists()


def test_delete_files_deletes_the_listed_files(root, run):
    folder = vod(root)
    result = run("delete_files", files=["vod/c-42/segment_1.ts", "vod/c-42/index.mpd", "vod/c-42/gone.ts"])
    assert result == {
        "files": ["vod/c-42/segment_1.ts", "vod/c-42/index.mpd"],
        "deleted": ["vod/c-42/segment_1.ts", "vod/c-42/index.mpd"],
        "missing": ["vod/c-42/gone.ts"],
    }
    assert not (folder / "segment_1.ts").exists()
    assert not (folder / "index.mpd").exists()
    assert (folder / "index.m3u8").exists()


def test_delete_files_checks_every_path_before_deleting_any(root, run, tmp_path):
    folder = vod(root)
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    (root / "vod/alias.txt").symlink_to(secret)
    for bad in (["vod/c-42/index.m3u8", "../secret.txt"], ["vod/c-42/index.m3u8", "vod"], [], "x" * 0):
        with pytest.raises(PermanentError):
            run("delete_files", files=bad)
    assert (folder / "index.m3u8").exists()
    # A link is deleted as a link: what it points to is untouched.
    assert run("delete_files", files=["vod/alias.txt"])["deleted"] == ["vod/alias.txt"]
    assert secret.read_text() == "s"
