"""``manage.py storage_move_to_client``: a shared storage layout moves into one client's area."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command


@pytest.fixture
def root(tmp_path, settings):
    settings.TASKENGINE_STORAGE_ROOT = tmp_path / "storage"
    settings.TASKENGINE_STORAGE_ROOT.mkdir()
    return settings.TASKENGINE_STORAGE_ROOT


@pytest.mark.django_db
def test_the_shared_layout_moves_into_the_clients_area(root, make_client, capsys):
    make_client("acme")
    make_client("other")
    (root / "vod/ep1").mkdir(parents=True)
    (root / "vod/ep1/ep1.m3u8").write_text("#EXTM3U\n")
    (root / "loose.mp4").write_bytes(b"mp4")
    (root / "other/vod").mkdir(parents=True)  # already another client's area: stays
    (root / "other/vod/theirs.mp4").write_bytes(b"theirs")

    call_command("storage_move_to_client", "acme", "--dry-run")
    assert "would move vod -> acme/vod" in capsys.readouterr().out
    assert (root / "vod/ep1/ep1.m3u8").is_file() and not (root / "acme").exists()

    call_command("storage_move_to_client", "acme")
    out = capsys.readouterr().out
    assert "moved loose.mp4 -> acme/loose.mp4" in out and "2 moved, 0 left in place" in out
    assert (root / "acme/vod/ep1/ep1.m3u8").read_text() == "#EXTM3U\n"
    assert (root / "acme/loose.mp4").read_bytes() == b"mp4"
    assert sorted(p.name for p in root.iterdir()) == ["acme", "other"]
    assert (root / "other/vod/theirs.mp4").read_bytes() == b"theirs"


@pytest.mark.django_db
def test_an_entry_whose_target_exists_is_left_in_place(root, make_client, capsys):
    make_client("acme")
    (root / "vod").mkdir()
    (root / "vod/new.txt").write_text("new")
    (root / "acme/vod").mkdir(parents=True)
    with pytest.raises(CommandError, match="left in place"):
        call_command("storage_move_to_client", "acme")
    assert "left vod: acme/vod already exists" in capsys.readouterr().err
    assert (root / "vod/new.txt").read_text() == "new" and not (root / "acme/vod/new.txt").exists()


@pytest.mark.django_db
def test_an_unknown_client_is_refused(root):
    with pytest.raises(CommandError, match="no client named 'nobody'"):
        call_command("storage_move_to_client", "nobody")
