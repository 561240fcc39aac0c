"""The cross-client table: every workflow that takes a path, tried by one client on another client's
files to read, write, delete and rename them, by every way a path could name them.

Each case must have no effect at all (the other client's area is byte for byte the same, and the
attacker's area holds nothing new) and end in a clear refusal: 400 at submission when the path can be
judged then, else a failed job whose message says why. A last pair of tests shows the same operations
reaching the other area when an operator names it with ``storage_client``: the cases fail because of
the rule, not because the table's operations could not work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobs.states import JobState
from taskengine_site.errors import DomainError
from tests.media.conftest import make_media

FOLDER_WORKFLOWS: dict[str, dict[str, Any]] = {
    "createmp4": {},
    "vodstream": {"renditions": 1, "segment_duration": 1, "video_preset": "ultrafast"},
    "capture_frame": {"frame_time": 0.5},
    "generate_gif": {"duration": 0.5, "width": 64, "fps": 5},
    "build_thumbnails": {"preview_thumbnails_interval": 1, "thumbnail_width": 64},
}


@dataclass(frozen=True)
class Areas:
    root: Path
    attacker: Path
    victim: Path


# How a path could name the victim's ``target`` (a path inside the victim's area).
VECTORS = {
    "dotdot": lambda areas, target: f"../{areas.victim.name}/{target}",
    "deep-dotdot": lambda areas, target: f"mine/../../{areas.victim.name}/{target}",
    "absolute": lambda areas, target: str(areas.victim / target),
    "rooted": lambda areas, target: f"/{areas.victim.name}/{target}",
    "backslash": lambda areas, target: f"..\\{areas.victim.name}\\{target.replace('/', chr(92))}",
    "symlink": lambda areas, target: _symlink(areas, target),
}


def _symlink(areas: Areas, target: str) -> str:
    """A link in the attacker's area to the victim's ``target`` (as another writer to the storage,
    or an old shared layout, could leave): only the step can see where it leads."""
    link = areas.attacker / "link"
    if not link.is_symlink():
        link.symlink_to(areas.victim / target)
    return "link"


def _clip(source: str) -> list[dict[str, Any]]:
    return [{"source": source, "start": 0, "end": 1}]


# (operation, workflow, parameters given the path that names the victim's file or folder)
TABLE: list[tuple[str, str, Any]] = []
for _workflow, _extra in FOLDER_WORKFLOWS.items():
    TABLE.append(
        (
            "read",
            _workflow,
            lambda p, w=_workflow, e=_extra: {"source_folder": p, "output_folder": f"out/{w}", **e},
        )
    )
    TABLE.append(("write", _workflow, lambda p, e=_extra: {"source_folder": "mine", "output_folder": p, **e}))
TABLE += [
    (
        "read",
        "createmp4-source_file",
        lambda p: {"source_folder": ".", "source_file": p, "output_folder": "out"},
    ),
    ("read", "vodcapture", lambda p: {"clips": _clip(f"{p}/video.mp4"), "output_folder": "out/vodcapture"}),
    ("write", "vodcapture", lambda p: {"clips": _clip("mine/video.mp4"), "output_folder": p}),
    ("delete", "voddelete", lambda p: {"folder": p}),
    ("delete", "asset_delete", lambda p: {"files": [f"{p}/show.mp4"]}),
    ("rename", "drmswitch", lambda p: {"folder": p, "drm": ["widevine"]}),
]
# What each operation aims at in the victim's area.
TARGETS = {"read": "src", "write": "vod/show", "delete": "vod/show", "rename": "vod/show"}
ROW_TARGETS = {"createmp4-source_file": "src/video.mp4"}


def _digest(area: Path) -> dict[str, str]:
    """Every entry of an area, by relative path: a file's SHA-256, or what a link points to."""
    entries = {}
    for path in sorted(area.rglob("*")):
        relative = path.relative_to(area).as_posix()
        if path.is_symlink():
            entries[relative] = f"-> {path.readlink()}"
        elif path.is_file():
            entries[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            entries[relative] = "dir"
    return entries


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cross-client")
    return {
        "victim": make_media(folder / "victim.mp4", seconds=2, size="160x90"),
        "mine": make_media(folder / "mine.mp4", seconds=2, size="128x72", audio=False),
    }


@pytest.fixture
def areas(settings, tmp_path, te_client, make_client, sources) -> Areas:
    settings.TASKENGINE_STORAGE_ROOT = tmp_path / "storage"
    victim_client, _ = make_client()
    root = Path(settings.TASKENGINE_STORAGE_ROOT)
    victim = root / victim_client.name
    for relative in ("src/video.mp4", "vod/show/show.mp4"):
        (victim / relative).parent.mkdir(parents=True, exist_ok=True)
        (victim / relative).write_bytes(sources["victim"].read_bytes())
    (victim / "vod/show/index.m3u8").write_text("#EXTM3U\n# clear\n")
    (victim / "vod/show/index.drm.m3u8").write_text("#EXTM3U\n# drm\n")
    attacker = root / te_client.name
    (attacker / "mine").mkdir(parents=True)
    (attacker / "mine/video.mp4").write_bytes(sources["mine"].read_bytes())
    return Areas(root=root, attacker=attacker, victim=victim)


def _submit_and_run(submit, broker, workflow: str, parameters: dict[str, Any], **kw: Any) -> tuple[str, Any]:
    """("refused", message) at submission, else ("ran", the job after the engine ran it)."""
    try:
        job = submit(workflow, parameters={"content_id": "show", **parameters}, **kw)
    except DomainError as refused:
        return "refused", refused.message
    broker.drain(skip=lambda message: message.queue == "callback")
    job.refresh_from_db()
    return "ran", job


@pytest.mark.django_db
@pytest.mark.parametrize("vector", sorted(VECTORS))
@pytest.mark.parametrize(
    ("operation", "workflow", "parameters"), TABLE, ids=[f"{o}-{w}" for o, w, _ in TABLE]
)
def test_another_clients_file_is_out_of_reach(operation, workflow, parameters, vector, areas, submit, broker):
    path = VECTORS[vector](areas, ROW_TARGETS.get(workflow, TARGETS[operation]))
    victim_before = _digest(areas.victim)
    attacker_before = _digest(areas.attacker)

    outcome, detail = _submit_and_run(submit, broker, workflow.split("-")[0], parameters(path))

    if outcome == "refused":
        assert detail.startswith("parameters."), detail
    else:
        job = detail
        assert (job.queue_state, job.failed) == (JobState.COMPLETED, True), (job.queue_state, job.message)
        # The refusal names the path rule, not an accident (a missing file, a decoding error).
        assert any(
            reason in job.message
            for reason in ("storage area", "leads out of", "symbolic link", "must not contain", "outside")
        ), job.message
    assert _digest(areas.victim) == victim_before
    assert _digest(areas.attacker) == attacker_before


@pytest.mark.django_db
def test_a_client_cannot_name_another_clients_area(areas, submit):
    with pytest.raises(DomainError) as refused:
        submit("voddelete", parameters={"folder": "vod/show", "storage_client": areas.victim.name})
    assert refused.value.message == (
        "parameters.storage_client: only an operator client may act for another client"
    )
    assert (areas.victim / "vod/show/show.mp4").is_file()


@pytest.mark.django_db
def test_an_operator_reaches_another_area_only_by_naming_it(areas, submit, broker, make_client):
    operator, _ = make_client(operator=True)
    victim = areas.victim.name
    # Without storage_client an operator's job works in the operator's own area, like anyone's.
    outcome, job = _submit_and_run(submit, broker, "voddelete", {"folder": "vod/show"}, client=operator)
    assert outcome == "ran" and not job.failed and job.tasks.get().result["deleted"] is False
    assert (areas.victim / "vod/show/show.mp4").is_file()

    outcome, job = _submit_and_run(
        submit,
        broker,
        "createmp4",
        {"source_folder": "src", "output_folder": "mp4", "storage_client": victim},
        client=operator,
    )
    assert outcome == "ran" and not job.failed, job.message
    assert (areas.victim / "mp4/show.mp4").stat().st_size > 0
    outcome, job = _submit_and_run(
        submit, broker, "voddelete", {"folder": "vod/show", "storage_client": victim}, client=operator
    )
    assert outcome == "ran" and not job.failed and not (areas.victim / "vod/show").exists()
    with pytest.raises(DomainError, match="no client named 'nobody'"):
        submit("voddelete", parameters={"folder": "x", "storage_client": "nobody"}, client=operator)


def test_the_table_covers_every_workflow_that_takes_a_path():
    workflows = {workflow.split("-")[0] for _, workflow, _ in TABLE}
    assert workflows == {*FOLDER_WORKFLOWS, "vodcapture", "voddelete", "asset_delete", "drmswitch"}
    assert {operation for operation, _, _ in TABLE} == {"read", "write", "delete", "rename"}


@pytest.mark.django_db
def test_another_clients_name_as_a_folder_stays_in_ones_own_area(areas, submit, broker):
    """Paths are relative to the client's own area: a folder named after another client is just a
    folder of one's own (what reached the other client's files when every client shared one root)."""
    victim_before = _digest(areas.victim)
    name = areas.victim.name
    outcome, job = _submit_and_run(submit, broker, "voddelete", {"folder": f"{name}/vod/show"})
    assert outcome == "ran" and not job.failed and job.tasks.get().result["deleted"] is False
    outcome, job = _submit_and_run(
        submit, broker, "createmp4", {"source_folder": "mine", "output_folder": f"{name}/vod/show"}
    )
    assert outcome == "ran" and not job.failed, job.message
    assert (areas.attacker / name / "vod/show/show.mp4").is_file()
    assert _digest(areas.victim) == victim_before
