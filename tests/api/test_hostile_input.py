"""Hostile input through the real API: templates past their bounds, control characters in whatever becomes a
path, URL, file name or tool argument, JSON Postgres cannot store, and output names that are not the files
a workflow makes. Each answers 400 naming the field, and nothing is stored; honest submissions still pass.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from jobs.models import Job
from logs.models import LogEntry
from tests import factories

KEY_URI = "https://keys.example.com/ep1.key"
HONEST: dict[str, dict[str, Any]] = {
    "vodstream": {"content_id": "ep1", "source_folder": "in/ep1", "output_folder": "vod/ep1"},
    "createmp4": {"content_id": "ep1", "source_folder": "in/ep1"},
    "capture_frame": {"content_id": "ep1", "source_folder": "in/ep1", "frame_time": 2},
    "generate_gif": {"content_id": "ep1", "source_folder": "in/ep1"},
    "build_thumbnails": {"content_id": "ep1", "source_folder": "in/ep1"},
    "vodcapture": {
        "content_id": "ep1",
        "output_folder": "clips/ep1",
        "clips": [{"source": "in/ep1/a.mp4", "start": 0, "end": 2}],
    },
    "voddelete": {"folder": "vod/ep1"},
    "asset_delete": {"files": ["vod/ep1/ep1.mp4"]},
}
# C0 (line feed, carriage return, escape), DEL, C1 (NEL, CSI) and the Unicode line and paragraph
# separators. NUL has tests of its own: no JSON column can hold it.
CONTROLS = ["\n", "\r", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029"]


def post(api: Any, workflow: str, parameters: Any, **job: Any) -> Any:
    return api.post("/job", {"job": {"workflow": workflow, **job}, "parameters": parameters}, format="json")


def post_raw(api: Any, raw: str, path: str = "/job", method: str = "post") -> Any:
    return getattr(api, method)(path, data=raw.encode(), content_type="application/json")


def assert_refused(response: Any, field: str) -> str:
    """400 whose error names ``field``; no job, no log entry: nothing was stored."""
    assert response.status_code == 400, response.content
    assert "Retry-After" not in response
    error = response.json()["error"]
    assert field in error, error
    assert Job.objects.count() == 0
    assert LogEntry.objects.count() == 0
    return error


# --- Honest submissions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workflow", sorted(HONEST))
def test_honest_submissions_of_every_media_workflow_are_accepted(api: Any, workflow: str) -> None:
    response = post(api, workflow, HONEST[workflow])

    assert response.status_code == 200, response.content
    assert Job.objects.get().parameters == HONEST[workflow]


def test_honest_templates_names_and_key_uri_are_accepted(api: Any) -> None:
    parameters = {
        "content_id": "Show_2.final-cut",
        "source_folder": "in/{content_id}",
        "output_folder": "vod/{source_folder}/hls",
        "drm": "aes",
        "key_uri": "https://keys.example.com/v1/{content_id}.key?token=abc&kid=1",
        "mp4_filename": "{content_id}.MP4",
        "thumbnail_filename": "{content_id}-poster.jpeg",
        "manifest_name": "index.m3u8",
        "episode": 7,
        "title": "Épisode 7 — «ünïcode» ✓",
        "nested": {"emoji": "\U0001f600", "list": [1, 2.5, True, None]},
    }

    response = post(api, "vodstream", parameters)

    assert response.status_code == 200, response.content
    assert Job.objects.get().parameters == parameters


# --- Templates ------------------------------------------------------------------------------------------


def test_doubling_templates_are_refused_without_expanding_them(api: Any) -> None:
    # Each level doubles the text of the next: expanded naively this is 2^40 characters.
    levels = [f"t{index}" for index in range(41)]
    parameters: dict[str, Any] = {"content_id": "{t0}", "source_folder": "in"}
    for name, below in itertools.pairwise(levels):
        parameters[name] = f"{{{below}}}{{{below}}}"
    parameters[levels[-1]] = "x"

    error = assert_refused(post(api, "vodstream", parameters), "parameters.content_id")
    assert "more than 10 levels deep" in error


def test_shallow_templates_past_the_length_bound_are_refused(api: Any) -> None:
    parameters = {"content_id": "{a}", "source_folder": "in", "a": "{b}{b}{b}{b}", "b": "x" * 1100}

    error = assert_refused(post(api, "vodstream", parameters), "parameters.a")
    assert "expands to more than 4096 characters" in error


def test_a_chain_of_1500_references_answers_400_not_500(api: Any) -> None:
    parameters: dict[str, Any] = {"content_id": "{c0}", "source_folder": "in", "c1500": "end"}
    parameters.update({f"c{index}": f"{{c{index + 1}}}" for index in range(1500)})

    assert_refused(post(api, "vodstream", parameters), "parameters.content_id")


# --- Control characters ---------------------------------------------------------------------------------

MEDIA_TEXT_CASES = [
    ("vodstream", "content_id", "ep{c}1"),
    ("vodstream", "source_folder", "in/ep{c}1"),
    ("vodstream", "output_folder", "vod/{c}ep1"),
    ("vodstream", "source_file", "a{c}.mp4"),
    ("vodstream", "manifest_name", "index{c}.m3u8"),
    ("vodstream", "mp4_filename", "ep1{c}.mp4"),
    ("vodstream", "thumbnail_filename", "ep1{c}.jpg"),
    ("capture_frame", "frame_filename", "ep1{c}.jpg"),
    ("generate_gif", "gif_filename", "ep1{c}.gif"),
    ("build_thumbnails", "thumbnails_vtt", "ep1{c}.vtt"),
    ("vodstream", "key_uri", "https://keys.example.com/ep1.key{c}/etc/passwd"),
    ("vodstream", "storage_client", "other{c}"),
    ("voddelete", "storage_client", "other{c}"),
]


@pytest.mark.parametrize("control", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize(
    ("workflow", "name", "value"), MEDIA_TEXT_CASES, ids=[c[1] for c in MEDIA_TEXT_CASES]
)
def test_control_characters_are_refused_in_media_parameters(
    operator_api: Any, control: str, workflow: str, name: str, value: str
) -> None:
    # An operator: storage_client is theirs to use, so the refusal is about the character.
    parameters = {**HONEST[workflow], name: value.format(c=control)}

    assert_refused(post(operator_api, workflow, parameters), f"parameters.{name}")


@pytest.mark.parametrize("control", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize(
    ("workflow", "field", "parameters"),
    [
        (
            "vodcapture",
            "parameters.clips[0].source",
            {"clips": [{"source": "in/a{c}.mp4", "start": 0, "end": 1}]},
        ),
        (
            "vodcapture",
            "parameters.clips[0].source",
            {"clips": [{"source": "https://example.com/a{c}.m3u8", "start": 0, "end": 1}]},
        ),
        # Controls at the ends, which str.strip() would quietly remove.
        (
            "vodcapture",
            "parameters.clips[0].source",
            {"clips": [{"source": "in/a.mp4{c}", "start": 0, "end": 1}]},
        ),
        ("voddelete", "parameters.folder", {"folder": "vod/ep{c}1"}),
        ("asset_delete", "parameters.files[1]", {"files": ["vod/a.mp4", "vod/b{c}.mp4"]}),
        ("drmswitch", "parameters.folder", {"folder": "vod{c}", "drm": ["clear"]}),
    ],
    ids=["clip-path", "clip-url", "clip-trailing", "folder", "files", "drmswitch-folder"],
)
def test_control_characters_are_refused_in_clips_and_storage_paths(
    api: Any, control: str, workflow: str, field: str, parameters: dict[str, Any]
) -> None:
    parameters = json.loads(json.dumps(parameters).replace("{c}", json.dumps(control)[1:-1]))
    base = {key: value for key, value in HONEST.get(workflow, {}).items() if key not in parameters}

    assert_refused(post(api, workflow, {**base, **parameters}), field)


@pytest.mark.parametrize("control", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_control_characters_are_refused_in_engine_urls(api: Any, control: str) -> None:
    url = f"https://hooks.example.com/done{control}x"

    assert_refused(post(api, "noop", {"rest_endpoints": [url]}), "parameters.rest_endpoints[0]")
    assert_refused(post(api, "noop", {}, semaphore_url=url), "semaphore_url")


def test_control_characters_are_refused_in_a_semaphore_url_update(api: Any) -> None:
    job = factories.job(api.te_client)

    response = api.patch(f"/jobs/{job.pk}", {"semaphore_url": "https://example.com/ready\x85"}, format="json")

    assert response.status_code == 400
    assert "semaphore_url" in response.json()["error"]
    job.refresh_from_db()
    assert job.semaphore_url is None


# --- key_uri ---------------------------------------------------------------------------------------------


def test_aes_without_key_uri_is_refused_with_the_reason(api: Any) -> None:
    error = assert_refused(
        post(api, "vodstream", {**HONEST["vodstream"], "drm": ["aes"]}), "parameters.key_uri"
    )

    assert error == (
        "parameters.key_uri: required for drm aes: the URL your players fetch the key from (keys are never "
        "published with the content)"
    )


@pytest.mark.parametrize(
    "key_uri",
    [
        "ep1.key",
        "/keys/ep1.key",
        "//keys.example.com/ep1.key",
        "file:///etc/passwd",
        "skd://ep1",
        "data:text/plain,0123456789abcdef",
        'https://keys.example.com/a".key',
        "https://keys.example.com/a,b.key",
        "https://keys.example.com/a b.key",
        "https://keys.example.com/a\tb.key",
        "https://keys.example.com/ep1.key\n/etc/passwd",
        "https://keys.example.com:99999/ep1.key",
        "https://keys.example.com/" + "k" * 2000,
        "{content_id}.key",
    ],
)
def test_key_uri_must_be_an_absolute_http_url_fit_for_a_playlist_line(api: Any, key_uri: str) -> None:
    assert_refused(
        post(api, "vodstream", {**HONEST["vodstream"], "drm": "aes", "key_uri": key_uri}),
        "parameters.key_uri",
    )


# --- JSON Postgres cannot store --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ('{"x": 1e999}', "parameters.x: not a finite number"),
        ('{"x": {"y": [0, -1e999]}}', "parameters.x.y[1]: not a finite number"),
        ('{"x": 1' + "0" * 400 + ".5}", "parameters.x: not a finite number"),
        ('{"k": "\\ud800"}', "parameters.k: contains a character that cannot be stored (lone surrogate)"),
        (
            '{"k": ["ok", "a\\udfffb"]}',
            "parameters.k[1]: contains a character that cannot be stored (lone surrogate)",
        ),
        (
            '{"\\ud800": 1}',
            'parameters["\\ud800"]: a key contains a character that cannot be stored (lone surrogate)',
        ),
        (
            '{"a": {"b": ["x\\u0000y"]}}',
            "parameters.a.b[0]: contains a character that cannot be stored (NUL)",
        ),
        (
            '{"a": {"n\\u0000": 1}}',
            'parameters.a["n\\u0000"]: a key contains a character that cannot be stored (NUL)',
        ),
        (
            '{"clips": [{"source": "in/a.mp4", "start": 1e999, "end": 2}]}',
            "parameters.clips[0].start: not a finite number",
        ),
    ],
)
def test_json_postgres_cannot_store_answers_400_naming_the_field(
    api: Any, parameters: str, message: str
) -> None:
    raw = '{"job": {"workflow": "noop"}, "parameters": ' + parameters + "}"

    error = assert_refused(post_raw(api, raw), message.split(":")[0])

    assert error == message


def test_unstorable_text_outside_the_parameters_is_named_too(api: Any) -> None:
    raw = '{"job": {"workflow": "no\\ud83dop"}, "parameters": {}}'

    assert_refused(post_raw(api, raw), "job.workflow: contains a character that cannot be stored")


def test_a_paired_surrogate_is_an_ordinary_character(api: Any) -> None:
    raw = '{"job": {"workflow": "noop"}, "parameters": {"title": "\\ud83d\\ude00"}}'

    assert post_raw(api, raw).status_code == 200
    assert Job.objects.get().parameters == {"title": "\U0001f600"}


@pytest.mark.parametrize(
    ("method", "path", "raw", "field"),
    [
        ("put", "/jobs/{id}", '{"priority": 1e999}', "priority"),
        ("patch", "/jobs/{id}", '{"semaphore_url": "https://e.com/\\ud800"}', "semaphore_url"),
        ("post", "/settings", '{"name": "max_jobs", "setting": 1e999}', "setting"),
        ("post", "/settings", '{"name": "max_\\u0000jobs", "setting": 1}', "name"),
        ("put", "/scheduler", '{"scheduler": "\\udc00"}', "scheduler"),
        # The body of a rerun goes into the new job's creation log entry.
        ("post", "/jobs/{id}/rerun", '{"x": ["\\ud800"]}', "x[0]"),
    ],
)
def test_every_endpoint_that_reads_a_body_refuses_unstorable_json(
    operator_api: Any, method: str, path: str, raw: str, field: str
) -> None:
    job = factories.job(operator_api.te_client)
    before = Job.objects.values().get(pk=job.pk)

    response = post_raw(operator_api, raw, path.replace("{id}", str(job.pk)), method)

    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{field}: ")
    assert list(Job.objects.values()) == [before]


# --- Output names ----------------------------------------------------------------------------------------


def test_the_stored_xss_submission_is_refused(api: Any) -> None:
    parameters = {
        **HONEST["build_thumbnails"],
        "content_id": "<img src=x onerror=alert(document.cookie)>",
        "thumbnails_vtt": "player.html",
    }

    assert_refused(post(api, "build_thumbnails", parameters), "parameters.content_id")
    parameters["content_id"] = "ep1"
    assert_refused(post(api, "build_thumbnails", parameters), "parameters.thumbnails_vtt")


@pytest.mark.parametrize(
    ("workflow", "name", "value"),
    [
        ("vodstream", "content_id", "../ep1"),
        ("vodstream", "content_id", "a/b"),
        ("vodstream", "content_id", "-ep1"),
        ("vodstream", "content_id", ".hidden"),
        ("vodstream", "content_id", "ep%05d"),
        ("vodstream", "content_id", "ep 1"),
        ("vodstream", "content_id", "ép1"),
        ("vodstream", "content_id", "e" * 129),
        ("vodstream", "content_id", ""),
        ("vodstream", "manifest_name", "index.html"),
        ("vodstream", "manifest_name", "index.m3u8/x"),
        ("vodstream", "mp4_filename", "ep1.mp4.html"),
        ("vodstream", "mp4_filename", "ep1.svg"),
        ("vodstream", "thumbnail_filename", "ep1.js"),
        ("vodstream", "thumbnail_filename", "ep1.png"),
        ("createmp4", "mp4_filename", "../../other/ep1.mp4"),
        ("capture_frame", "frame_filename", "frame.svg"),
        ("generate_gif", "gif_filename", "anim.html"),
        ("build_thumbnails", "thumbnails_vtt", "thumbs.js"),
        ("build_thumbnails", "thumbnails_vtt", "{content_id}.html"),
    ],
)
def test_output_names_keep_a_safe_character_set_and_their_extension(
    api: Any, workflow: str, name: str, value: str
) -> None:
    assert_refused(post(api, workflow, {**HONEST[workflow], name: value}), f"parameters.{name}")


def test_names_built_by_templates_are_checked_after_expansion(api: Any) -> None:
    parameters = {**HONEST["generate_gif"], "label": "<svg onload=alert(1)>", "gif_filename": "{label}.gif"}

    assert_refused(post(api, "generate_gif", parameters), "parameters.gif_filename")


def test_a_value_the_database_still_refuses_is_a_400_not_a_503(api: Any, monkeypatch: Any) -> None:
    # Whatever the parser's checks did not foresee: the same request would fail again, so no Retry-After.
    from django.db import DataError

    from jobs.api import views

    def refuse(**_: Any) -> Any:
        raise DataError("invalid input syntax for type json\nDETAIL: host=db.internal user=taskengine")

    # Both paths of POST /job (the plain one, jobs.api.submit, and the DRF view's) submit through
    # views.submit_checked.
    monkeypatch.setattr(views, "job_submit", refuse)

    # persist "true" is valid but not plain: it goes the DRF view's way.
    for response in (post(api, "noop", {}), post(api, "noop", {}, persist="true")):
        assert response.status_code == 400
        assert response.json() == {"error": "A value in the request cannot be stored."}
        assert "Retry-After" not in response
