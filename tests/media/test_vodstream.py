"""vodstream end to end through its steps: a real ffmpeg encode and Shaka Packager run on synthetic
sources, read back with parsers the project did not write (``m3u8``, ``mpegdash``, ``pymp4``) and
decoded frame by frame with PyAV (the FFmpeg libraries), clear and encrypted."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import av
import pytest

from media.ffmpeg import ffmpeg_exe
from media.params import validate_parameters
from media.selectors import job_key_documents
from taskengine_site.errors import DomainError
from tests.media import streams
from tests.media.conftest import FPS, Recorder, decode, put, run_workflow, with_local_key

SECONDS = 4
FRAMES = SECONDS * FPS


def vodstream(area, media_cache, drm="clear", job_id=None, source=None, **extra):
    put(area, source or media_cache(SECONDS), "incoming/show/source.mp4")
    parameters = {
        "content_id": "show",
        "source_folder": "incoming/show",
        "output_folder": "vod/show",
        "drm": drm if isinstance(drm, list) else [drm],
        "segment_duration": 1,
        "video_preset": "ultrafast",
        **extra,
    }
    validate_parameters("vodstream", parameters)
    recorder = Recorder()
    results = run_workflow("vodstream", parameters, area, recorder, job_id=job_id)
    return results, recorder, area / "vod/show"


def assert_every_rendition_plays(decoded, heights=(360, 240, 144)):
    assert sorted((entry["size"][1] for entry in decoded["video"]), reverse=True) == list(heights)
    for entry in decoded["video"]:
        # Every frame of every rendition, start to end: the duration is exact to the frame.
        assert entry["frames"] == FRAMES
        assert abs((entry["last"] - entry["first"] + 1 / FPS) - SECONDS) < 1 / FPS
    assert decoded["audio"] and all(abs(seconds - SECONDS) < 0.1 for seconds in decoded["audio"])


def test_clear_cmaf_with_hls_and_dash_from_the_same_segments(area, media_cache):
    results, recorder, out = vodstream(area, media_cache, thumbnail_time=1.5, generate_mp4=True)
    final = results["publish_outputs"]
    assert final["message"] == "vod/show/show.m3u8"
    assert abs(final["metadata"]["duration"] - SECONDS) < 1 / FPS
    # ``files`` lists every file written, and only those.
    on_disk = sorted(p.relative_to(area).as_posix() for p in out.rglob("*") if p.is_file())
    assert sorted(final["files"]) == on_disk
    assert {"vod/show/show.jpg", "vod/show/show.mp4", "vod/show/show.mpd"} <= set(final["files"])
    # No intermediate step claims callback keys: the job callback would count their files twice.
    for name, result in results.items():
        if name != "publish_outputs":
            assert not {"files", "metadata", "duration"} & set(result), name

    master = streams.hls(out / "show.m3u8")
    assert master.is_variant and master.version == 7
    assert [p.stream_info.resolution for p in master.playlists] == [(640, 360), (426, 240), (256, 144)]
    for variant in master.playlists:
        assert variant.stream_info.frame_rate == 25.0 and variant.stream_info.audio == "audio"
        assert variant.stream_info.average_bandwidth <= variant.stream_info.bandwidth
        assert variant.stream_info.codecs.startswith("avc1.") and "mp4a.40.2" in variant.stream_info.codecs
    # An I-frame playlist per rendition, naming byte ranges of the same segments.
    assert len(master.iframe_playlists) == 3
    iframes = streams.hls(out / master.iframe_playlists[0].uri)
    assert iframes.is_i_frames_only and all(s.byterange for s in iframes.segments)

    # The DASH MPD names the very files the HLS media playlists name.
    manifest = streams.mpd(out / "show.mpd")
    assert manifest.type == "static"
    dash_files = {p for files in streams.mpd_segment_files(out, manifest).values() for p in files}
    hls_files = set()
    for variant in [*master.playlists, *master.media]:
        playlist = streams.hls(out / variant.uri)
        hls_files |= {out / s.uri for s in playlist.segments} | {
            out / s.init_section.uri for s in playlist.segments
        }
    assert dash_files == hls_files and all(p.is_file() for p in dash_files)
    assert all(p.suffix in (".m4s", ".mp4") for p in hls_files)

    assert_every_rendition_plays(decode(out / "show.m3u8"))
    thumbnail = decode(out / "show.jpg")["video"][0]
    assert thumbnail["size"] == (640, 360) and thumbnail["frames"] == 1
    assert decode(out / "show.mp4")["video"][0]["frames"] == FRAMES
    assert any(
        line.startswith("Encoding 4.0 s into 3 rendition(s) (640x360, 426x240, 256x144)")
        for line in recorder.lines
    )
    assert recorder.progress and max(recorder.progress) == 100.0


def _sar(path: Path) -> tuple[int, int, int, int]:
    """(width, height, SAR numerator, SAR denominator) of the first video frame ``path`` decodes."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        ratio = container.streams.video[0].codec_context.sample_aspect_ratio
        assert ratio is not None
        return frame.width, frame.height, ratio.numerator, ratio.denominator


def test_renditions_have_square_pixels_and_even_sizes_and_never_upscale(area, media_cache, tmp_path):
    # A 4:3 picture stored anamorphically (704x576, SAR 12:11), as DVB and DVD sources are.
    source = tmp_path / "pal.mp4"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=704x576:rate=25:duration=2",
            "-vf",
            "setsar=12/11",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            str(source),
        ],
        check=True,
    )
    _results, _, out = vodstream(area, media_cache, source=source, renditions=5)
    master = streams.hls(out / "show.m3u8")
    # No rung above the source's 576 lines; widths follow the 4:3 picture, even, with square pixels.
    assert [p.stream_info.resolution for p in master.playlists] == [
        (640, 480),
        (480, 360),
        (320, 240),
        (192, 144),
    ]
    for variant in master.playlists:
        segment = streams.hls(out / variant.uri).segments[0]
        joined = tmp_path / "joined.mp4"
        joined.write_bytes((out / segment.init_section.uri).read_bytes() + (out / segment.uri).read_bytes())
        width, height, num, den = _sar(joined)
        assert (width, height) == variant.stream_info.resolution and (num, den) == (1, 1)


def test_a_16_9_240p_rendition_is_square_pixels(area, media_cache, tmp_path):
    _results, _, out = vodstream(area, media_cache)
    playlist = streams.hls(out / "show_video_240p.m3u8")
    joined = tmp_path / "joined.mp4"
    joined.write_bytes(
        (out / playlist.segments[0].init_section.uri).read_bytes()
        + (out / playlist.segments[0].uri).read_bytes()
    )
    assert _sar(joined) == (426, 240, 1, 1)


def test_bandwidth_is_measured_from_the_segments_without_the_short_tail(area, media_cache, tmp_path):
    # Audio a few hundredths of a second longer than the picture, as an AAC encode often is.
    source = tmp_path / "tail.mp4"
    command = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=640x360:rate={FPS}:duration={SECONDS}",
    ]
    command += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS + 0.03}"]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(FPS), "-c:a", "aac", str(source)]
    subprocess.run(command, check=True)
    _results, _, out = vodstream(area, media_cache, source=source)
    master = streams.hls(out / "show.m3u8")

    def rates(uri):
        playlist = streams.hls(out / uri)
        return [((out / s.uri).stat().st_size * 8 / s.duration, s.duration) for s in playlist.segments]

    audio = rates(master.media[0].uri)
    # The short tail segment's rate is above the real one (a fragment's boxes over a few frames).
    assert audio[-1][1] < 0.5 and audio[-1][0] > max(rate for rate, _ in audio[:-1])
    audio_peak = max(rate for rate, _ in audio[:-1])
    for variant in master.playlists:
        video_peak = max(rate for rate, _ in rates(variant.uri))
        assert variant.stream_info.bandwidth == pytest.approx(video_peak + audio_peak, abs=2)
        # Over-declaring by the tail's rate would push players down the ladder.
        assert variant.stream_info.bandwidth < video_peak + audio[-1][0]


def two_languages_and_subtitles(folder: Path) -> Path:
    """A 4 s source with English and French audio (different tones) and an English subtitle track."""
    srt = folder / "en.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,500\nHello\n\n2\n00:00:02,000 --> 00:00:03,000\nWorld\n")
    source = folder / "languages.mp4"
    command = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=640x360:rate={FPS}:duration={SECONDS}",
    ]
    command += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}"]
    command += [
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=660:sample_rate=48000:duration={SECONDS}",
        "-i",
        str(srt),
    ]
    command += [
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "2:a",
        "-map",
        "3:s",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
    ]
    command += ["-g", str(FPS), "-c:a", "aac", "-ac:a:1", "2", "-c:s", "mov_text"]
    command += [
        "-metadata:s:a:0",
        "language=eng",
        "-metadata:s:a:1",
        "language=fra",
        "-metadata:s:a:1",
        "title=Version française",
    ]
    command += ["-metadata:s:s:0", "language=eng", str(source)]
    subprocess.run(command, check=True)
    return source


def test_every_audio_language_and_text_track_is_carried(area, media_cache, tmp_path):
    source = two_languages_and_subtitles(tmp_path)
    put(area, tmp_path / "en.srt", "incoming/show/fr.srt")
    _results, _recorder, out = vodstream(
        area,
        media_cache,
        source=source,
        text_tracks=[{"file": "incoming/show/fr.srt", "language": "fr", "name": "Français"}],
    )
    master = streams.hls(out / "show.m3u8")
    audio = [(m.language, m.name, m.channels, m.default) for m in master.media if m.type == "AUDIO"]
    assert audio == [("en", "English", "1", "YES"), ("fr", "Français", "2", "NO")]
    text = [(m.language, m.name, m.group_id) for m in master.media if m.type == "SUBTITLES"]
    assert text == [("en", "English", "subtitles"), ("fr", "Français", "subtitles")]
    assert all(p.stream_info.subtitles == "subtitles" for p in master.playlists)
    cues = "".join(p.read_text() for p in sorted(out.glob("show_text_0/*.vtt")))
    assert "Hello" in cues and "World" in cues
    # DASH: one AdaptationSet per audio language and per text track.
    manifest = streams.mpd(out / "show.mpd")
    sets = manifest.periods[0].adaptation_sets
    assert sorted(a.lang for a in sets if a.content_type == "audio") == ["en", "fr"]
    assert sorted(a.lang for a in sets if a.content_type == "text") == ["en", "fr"]
    # The two audio tracks are the source's two, not one of them twice: their tones differ.
    decoded = decode(out / "show.m3u8")
    assert len(decoded["audio"]) == 2


def test_a_track_that_cannot_be_carried_is_reported_not_dropped(area):
    # Bitmap subtitles (PGS, DVD) cannot become WebVTT: the plan says so, and transcode_hls logs it.
    from media.params import resolve_parameters
    from media.probe import AudioTrack, MediaInfo, TextTrack
    from media.steps.vod import Sources, plan_tracks
    from tests.media.conftest import make_ctx

    info = MediaInfo(
        duration=4, width=1920, height=1080, fps=25, video_codec="h264", audio_codec="aac",
        audio=(AudioTrack(0, "aac", "eng", "", 6, 48000, True),
               AudioTrack(1, "ac3", "deu", "", 2, 48000, False)),
        text=(TextTrack(0, "hdmv_pgs_subtitle", "eng", "", False, False),
              TextTrack(1, "subrip", "deu", "SDH", False, True)),
    )  # fmt: skip
    p = resolve_parameters({"content_id": "x", "source_folder": "in"})
    plan = plan_tracks(make_ctx("vodstream", p, area), p, Sources([], info, ["x.mkv"]))
    assert [(a.index, a.name, a.channels, a.default) for a in plan.audio] == [
        (0, "English", 2, True),
        (1, "Deutsch", 2, False),
    ]
    assert [(t.stream, t.name, t.forced) for t in plan.text] == [(1, "SDH", True)]
    assert plan.left_out == [
        "text track 1 (hdmv_pgs_subtitle, eng) is left out: bitmap subtitles cannot become WebVTT"
    ]


KEY_URI = "https://keys.example.com/show/key"


@pytest.mark.django_db
def test_aes_128_needs_its_key(area, media_cache, area_job, tmp_path):
    job = area_job(area, {"content_id": "show"})
    results, recorder, out = vodstream(area, media_cache, "aes", job_id=job.pk, key_uri=KEY_URI)
    (document,) = job_key_documents(job_id=job.pk)
    key = bytes.fromhex(document["key_hex"])
    # The key is a secret: nowhere in the published folder, its files, the steps' results or the log.
    assert not [p for p in out.rglob("*") if p.suffix in (".key", ".keyinfo", ".flags")]
    assert all(key not in p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert not [f for f in results["publish_outputs"]["files"] if f.endswith((".key", ".keyinfo"))]
    assert document["key_hex"] not in json.dumps(results) + "\n".join(recorder.lines)
    assert not (out / "show.mpd").exists() and results["transcode_hls"]["segment_type"] == "mpegts"
    variant = streams.hls(out / "show_video_240p.m3u8")
    assert (variant.keys[0].method, variant.keys[0].uri, variant.keys[0].iv) == (
        "AES-128",
        KEY_URI,
        f"0x{document['iv_hex']}",
    )
    assert all(s.uri.endswith(".ts") for s in variant.segments)

    # A player given the key by the client's key server plays every rendition.
    player = with_local_key(out, KEY_URI, key, tmp_path / "player")
    assert_every_rendition_plays(decode(player / "show.m3u8", allowed_extensions="ALL"))
    with pytest.raises(av.error.InvalidDataError):
        decode(out / variant.segments[1].uri)
    (player / "local.key").write_bytes(bytes(b ^ 1 for b in key))
    with pytest.raises(av.error.FFmpegError):
        decode(player / "show.m3u8", allowed_extensions="ALL")


def _decrypts(out: Path, key: str) -> None:
    """Every rendition decodes to the end with ``key``; without it, or with another, it does not
    decode to the same pictures and sound."""
    master = streams.hls(out / "show.m3u8")
    wrong = f"{(int(key, 16) ^ 1):032x}"
    for uri in [*(p.uri for p in master.playlists), *(m.uri for m in master.media if m.type == "AUDIO")]:
        path = streams.joined(out, uri)
        decoded = decode(path, decryption_key=key)
        if decoded["video"]:
            (entry,) = decoded["video"]
            assert entry["frames"] == FRAMES
        else:
            assert abs(decoded["audio"][0] - SECONDS) < 0.1
        right = streams.digest(path, decryption_key=key)
        assert right is not None
        assert streams.digest(path) != right and streams.digest(path, decryption_key=wrong) != right


@pytest.mark.django_db
def test_cenc_clearkey_is_signalled_and_needs_its_key(area, media_cache, area_job):
    job = area_job(area, {"content_id": "show"})
    results, _, out = vodstream(area, media_cache, "cenc", job_id=job.pk)
    (document,) = job_key_documents(job_id=job.pk)
    assert document["kid_hex"] == results["prepare_encryption"]["kid"]
    assert document["clearkey"]["keys"][0]["kty"] == "oct" and document["systems"] == ["clearkey"]
    assert document["key_hex"] not in json.dumps(results)
    assert not [p for p in out.rglob("*") if "clearkey" in p.name or p.suffix in (".key", ".flags")]
    for name in ("show_video_360p.m3u8", "show_audio_0.m3u8"):
        playlist = streams.hls(out / name)
        (key,) = playlist.keys
        assert (key.method, key.keyformat) == ("SAMPLE-AES-CTR", "org.w3.clearkey")
        init = out / playlist.segments[0].init_section.uri
        # Video and audio alike: a pssh for ClearKey and the key id in tenc.
        assert streams.pssh_systems(init) == {"clearkey"}
        (tenc,) = streams.boxes(init, b"tenc")
        assert tenc.key_ID.hex == document["kid_hex"] and tenc.is_encrypted == 1
        assert [s.scheme_type for s in streams.boxes(init, b"schm")] == [b"cenc"]
        assert streams.box_types(out / playlist.segments[0].uri) >= {b"senc", b"moof", b"mdat"}
    protections = streams.mpd(out / "show.mpd").periods[0].adaptation_sets[0].content_protections
    assert {(c.scheme_id_uri, c.value) for c in protections} >= {("urn:mpeg:dash:mp4protection:2011", "cenc")}
    _decrypts(out, document["key_hex"])


def _nal_units(sample: bytes) -> list[tuple[int, int, int]]:
    """(offset, length, type) of every length-prefixed NAL unit of an H.264 sample."""
    units, at = [], 0
    while at + 4 <= len(sample):
        length = int.from_bytes(sample[at : at + 4], "big")
        units.append((at, 4 + length, sample[at + 4] & 0x1F))
        at += 4 + length
    return units


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["cenc", "cbcs"])
def test_only_slice_data_is_encrypted(scheme, area, media_cache, area_job):
    job = area_job(area, {"content_id": "show"})
    _, _, out = vodstream(area, media_cache, "cenc", job_id=job.pk, encryption_scheme=scheme, renditions=1)
    playlist = streams.hls(out / "show_video_360p.m3u8")
    (tenc,) = streams.boxes(out / playlist.segments[0].init_section.uri, b"tenc")
    checked = 0
    for segment in playlist.segments:
        path = out / segment.uri
        samples = streams.mdat_samples(path, streams.trun_sizes(path))
        for sample, ranges in zip(samples, streams.senc_subsamples(path, tenc.iv_size), strict=True):
            encrypted, at = [], 0
            for clear, cipher in ranges:
                at += clear
                encrypted.append((at, at + cipher))
                at += cipher
            for offset, length, kind in _nal_units(sample):
                inside = [
                    (max(a, offset), min(b, offset + length))
                    for a, b in encrypted
                    if a < offset + length and b > offset
                ]
                if kind in (1, 5):
                    # A slice: its length, NAL header and the start of its slice header stay clear.
                    assert inside and min(a for a, _ in inside) >= offset + 6
                else:
                    # SEI, SPS, PPS, AUD: entirely clear, so captions and parsers read them.
                    assert inside == [], (kind, inside)
                checked += 1
    assert checked > FRAMES


@pytest.mark.django_db
def test_multi_drm_cenc_signals_every_system(area, media_cache, area_job):
    job = area_job(area, {"content_id": "show"})
    _results, _, out = vodstream(
        area, media_cache, ["cenc", "widevine", "playready"], job_id=job.pk, renditions=1
    )
    playlist = streams.hls(out / "show_video_360p.m3u8")
    formats = {k.keyformat for k in playlist.keys}
    assert formats == {
        "org.w3.clearkey",
        "urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed",
        "com.microsoft.playready",
    }
    assert {k.method for k in playlist.keys} == {"SAMPLE-AES-CTR"}
    assert streams.pssh_systems(out / playlist.segments[0].init_section.uri) == {
        "clearkey",
        "widevine",
        "playready",
    }
    protections = streams.mpd(out / "show.mpd").periods[0].adaptation_sets[0].content_protections
    assert {c.scheme_id_uri for c in protections} == {
        "urn:mpeg:dash:mp4protection:2011",
        "urn:uuid:1077efec-c0b2-4d02-ace3-3c1e52e2fb4b",
        "urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed",
        "urn:uuid:9a04f079-9840-4286-ab92-e65be0885f95",
    }
    (document,) = job_key_documents(job_id=job.pk)
    assert document["systems"] == ["clearkey", "widevine", "playready"]


@pytest.mark.django_db
def test_cbcs_with_fairplay(area, media_cache, area_job):
    job = area_job(area, {"content_id": "show"})
    _results, _, out = vodstream(
        area,
        media_cache,
        ["fairplay", "widevine", "clearkey"],
        job_id=job.pk,
        fairplay_key_uri="skd://keys.example.com/show",
    )
    (document,) = job_key_documents(job_id=job.pk)
    assert document["kind"] == "cbcs"
    playlist = streams.hls(out / "show_audio_0.m3u8")
    keys = {k.keyformat: k for k in playlist.keys}
    assert set(keys) == {
        "com.apple.streamingkeydelivery",
        "urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed",
        "org.w3.clearkey",
    }
    assert keys["com.apple.streamingkeydelivery"].uri == "skd://keys.example.com/show"
    assert {k.method for k in playlist.keys} == {"SAMPLE-AES"}
    init = out / playlist.segments[0].init_section.uri
    (tenc,) = streams.boxes(init, b"tenc")
    assert [s.scheme_type for s in streams.boxes(init, b"schm")] == [b"cbcs"] and tenc.iv_size == 0
    _decrypts(out, document["key_hex"])


@pytest.mark.django_db
def test_cbcs_clearkey_names_no_identity_key(area, media_cache, area_job):
    # The packager writes a KEYFORMAT="identity" tag for ClearKey's common system under cbcs whose URI
    # is the key id, not the key; hls.js prefers it to every other key and cannot play the fMP4 then.
    job = area_job(area, {"content_id": "show"})
    _results, _, out = vodstream(
        area, media_cache, ["clearkey", "widevine"], job_id=job.pk, encryption_scheme="cbcs", renditions=1
    )
    (document,) = job_key_documents(job_id=job.pk)
    names = ["show_video_360p.m3u8", "show_video_360p_iframes.m3u8", "show_audio_0.m3u8"]
    for name in names:
        playlist = streams.hls(out / name)
        keys = {k.keyformat: k for k in playlist.keys}
        assert set(keys) == {"org.w3.clearkey", "urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"}, name
        assert {k.method for k in playlist.keys} == {"SAMPLE-AES"}
        kid = base64.b64encode(bytes.fromhex(document["kid_hex"])).decode()
        assert keys["org.w3.clearkey"].uri == f"data:text/plain;base64,{kid}"
    assert "identity" not in "".join(p.read_text() for p in out.glob("*.m3u8"))
    _decrypts(out, document["key_hex"])


@pytest.mark.django_db
def test_single_rendition_encrypted_output_names_no_pattern(area, media_cache, area_job):
    job = area_job(area, {"content_id": "show"})
    _results, _, out = vodstream(area, media_cache, "cenc", job_id=job.pk, renditions=1)
    assert not [p for p in out.rglob("*") if "%" in p.name]
    for playlist in out.glob("*.m3u8"):
        assert "%" not in playlist.read_text(), playlist.name
    assert "%" not in (out / "show.mpd").read_text().replace("$Number%05d$", "")


def test_a_second_run_into_the_source_folder_takes_only_the_sources(area, media_cache):
    put(area, media_cache(SECONDS), "show/source.mp4")
    parameters = {
        "content_id": "show",
        "source_folder": "show",
        "segment_duration": 1,
        "video_preset": "ultrafast",
        "renditions": 1,
    }
    first = run_workflow("vodstream", {**parameters, "generate_mp4": True}, area)
    second = run_workflow("vodstream", parameters, area)
    assert first["fetch_sources"]["sources"] == second["fetch_sources"]["sources"] == ["source.mp4"]
    assert abs(second["publish_outputs"]["metadata"]["duration"] - SECONDS) < 1 / FPS


def test_create_thumbnail_says_why_it_made_nothing(area, media_cache):
    results, recorder, _ = vodstream(area, media_cache, renditions=1)
    assert results["create_thumbnail"]["skipped"]
    assert "No thumbnail made: thumbnail_time is not set" in recorder.lines


def test_loudness_is_normalised_in_two_passes(area, media_cache):
    _results, recorder, out = vodstream(area, media_cache, renditions=1, loudness_target="ebu_r128")
    assert any("dBTP measured; normalising to -23 LUFS, -1 dBTP" in line for line in recorder.lines)
    audio = streams.hls(out / "show_audio_0.m3u8")
    joined = out.parent / "audio.mp4"
    joined.write_bytes(
        b"".join(
            (out / p).read_bytes()
            for p in [audio.segments[0].init_section.uri, *[s.uri for s in audio.segments]]
        )
    )
    measured = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(joined), "-af", "ebur128", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    integrated = float(measured.rsplit("I:", 1)[1].split("LUFS")[0])
    assert abs(integrated - -23) < 1.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"drm": ["widevine"], "encryption_scheme": "ctr"},
            "parameters.encryption_scheme: 'ctr' is not supported (one of: cenc, cbcs)",
        ),
        (
            {"drm": ["fairplay"], "encryption_scheme": "cenc"},
            "parameters.encryption_scheme: FairPlay needs cbcs",
        ),
        (
            {"drm": ["fairplay"]},
            "parameters.fairplay_key_uri: required for drm fairplay without a key_server_url",
        ),
        (
            {"drm": ["aes"], "key_uri": KEY_URI, "formats": ["dash"]},
            "parameters.formats: drm aes is HLS AES-128",
        ),
        ({"formats": ["hls", "smooth"]}, "parameters.formats: 'smooth' is not supported (any of: hls, dash)"),
        ({"formats": ["hls\n"]}, "parameters.formats: must be a list of names without control characters"),
        ({"loudness_target": "loud"}, "parameters.loudness_target: must be ebu_r128 or atsc_a85"),
        ({"loudness_target": 3}, "parameters.loudness_target: a loudness in LUFS must be between -70 and -5"),
        ({"key_server_url": "ftp://keys.example.com/cpix"}, "parameters.key_server_url: url not allowed"),
        (
            {"key_server_url": "https://keys.example.com/\x01"},
            "parameters.key_server_url: must not contain control characters",
        ),
        (
            {"drm": ["fairplay"], "fairplay_key_uri": 'skd://a",b'},
            "parameters.fairplay_key_uri: must not contain spaces",
        ),
        (
            {"text_tracks": [{"file": "../x.srt", "language": "en"}]},
            "parameters.text_tracks[0].file: may not contain '..'",
        ),
        (
            {"text_tracks": [{"file": "x.ass", "language": "en"}]},
            "parameters.text_tracks[0].file: must be an .srt or .vtt file",
        ),
        (
            {"text_tracks": [{"file": "x.srt", "language": "e n"}]},
            "parameters.text_tracks[0].language: must be a language tag",
        ),
        (
            {"text_tracks": [{"file": "x.srt", "language": "en", "name": 'A"B'}]},
            "parameters.text_tracks[0].name: must be 1 to 64",
        ),
        ({"dash_manifest_name": "x.m3u8"}, "parameters.dash_manifest_name: must end in .mpd"),
    ],
)
def test_new_parameters_are_refused_at_submission_naming_the_field(extra, message):
    with pytest.raises(DomainError) as refused:
        validate_parameters("vodstream", {"content_id": "x", "source_folder": "in", **extra})
    assert refused.value.message.startswith(message), refused.value.message


def test_unsupported_drm_is_refused_at_submission():
    with pytest.raises(DomainError) as refused:
        validate_parameters("vodstream", {"content_id": "x", "source_folder": "in", "drm": ["primetime"]})
    assert refused.value.message == "parameters.drm: 'primetime' is not supported"
