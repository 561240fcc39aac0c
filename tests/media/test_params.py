"""The media workflows' parameters: defaults, templates and refusal at submission."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from media.params import latest_future_clip_end, resolve_parameters, validate_parameters
from taskengine_site.errors import DomainError


def refused(workflow: str, parameters: dict) -> str:
    with pytest.raises(DomainError) as error:
        validate_parameters(workflow, parameters)
    return error.value.message


def test_documented_defaults_and_templates():
    values = resolve_parameters({"content_id": "ep1", "source_folder": "in/ep1"})
    assert values["output_folder"] == "in/ep1"
    assert values["mp4_filename"] == "ep1.mp4"
    assert values["drm"] == "clear" and values["source_storage"] == "local"
    chained = resolve_parameters(
        {"content_id": "ep1", "source_folder": "in/{content_id}", "output_folder": "vod/{source_folder}/hls"}
    )
    assert chained["output_folder"] == "vod/in/ep1/hls"
    assert resolve_parameters({"content_id": "x", "source_storage": "S3"})["source_storage"] == "s3"


def test_templates_that_cannot_resolve_are_refused():
    assert refused("createmp4", {"content_id": "a", "source_folder": "{nope}"}) == (
        "parameters.source_folder: {nope} names a parameter that is not set"
    )
    assert "refers back to itself" in refused(
        "createmp4", {"content_id": "{source_folder}", "source_folder": "{content_id}"}
    )


@pytest.mark.parametrize(
    ("workflow", "parameters", "message"),
    [
        ("vodstream", {"content_id": "a"}, "parameters.source_folder: is required"),
        (
            "vodstream",
            {"content_id": "a", "source_folder": "s", "drm": "primetime"},
            "'primetime' is not supported",
        ),
        ("vodstream", {"content_id": "a", "source_folder": "s", "drm": ["aes", "cenc"]}, "stand alone"),
        (
            "vodstream",
            {"content_id": "a", "source_folder": "s", "source_storage": "azure_blob"},
            "not supported",
        ),
        ("vodstream", {"content_id": "a", "source_folder": "s", "renditions": 9}, "at most 5"),
        ("vodstream", {"content_id": "a", "source_folder": "../etc"}, "may not contain '..'"),
        ("createmp4", {"content_id": "a", "source_folder": "s", "drm": "aes"}, "makes clear output only"),
        ("capture_frame", {"content_id": "a", "source_folder": "s"}, "parameters.frame_time: is required"),
        (
            "generate_gif",
            {"content_id": "a", "source_folder": "s", "fps": "fast"},
            "parameters.fps: must be a number",
        ),
        ("generate_gif", {"content_id": "a", "source_folder": "s", "playback_speed": 10}, "at most 4"),
        ("vodcapture", {"content_id": "a", "output_folder": "o", "clips": []}, "non-empty list"),
        (
            "vodcapture",
            {"content_id": "a", "output_folder": "o", "clips": [{"source": "x.mp4", "start": 5, "end": 2}]},
            "parameters.clips[0]: end must be after start",
        ),
        (
            "vodcapture",
            {
                "content_id": "a",
                "output_folder": "o",
                "clips": [{"source": "ftp://h/x", "start": 0, "end": 1}],
            },
            "must be an http(s) URL or a storage path",
        ),
        (
            "vodcapture",
            {
                "content_id": "a",
                "output_folder": "o",
                "clips": [{"source": "http://10.0.0.1/live.m3u8", "start": 0, "end": 1}],
            },
            "parameters.clips[0].source: url not allowed",
        ),
        (
            "vodcapture",
            {
                "content_id": "a",
                "output_folder": "o",
                "clips": [
                    {"source": "a.mp4", "start": "2030-01-01T00:00:00Z", "end": "2030-01-01T00:01:00Z"}
                ],
            },
            "date-time bounds need an HLS URL source",
        ),
    ],
)
def test_bad_input_is_refused_with_the_parameter_named(workflow, parameters, message, settings):
    settings.TASKENGINE_ALLOW_PRIVATE_URLS = False
    assert message in refused(workflow, parameters)


def test_drm_message_is_the_documented_one():
    assert refused("vodstream", {"content_id": "a", "source_folder": "s", "drm": ["clear", "fairplay"]}) == (
        "parameters.drm: clear and aes stand alone; got clear, fairplay"
    )


def test_clip_bounds_accept_seconds_clock_time_and_date_times():
    values = validate_parameters(
        "vodcapture",
        {
            "content_id": "a",
            "output_folder": "o",
            "clips": [
                {"source": "in/a.mp4", "start": 1.5, "end": "00:00:03.25"},
                {
                    "source": "https://example.com/live.m3u8",
                    "start": "2030-01-01T10:00:00Z",
                    "end": "2030-01-01T10:00:30",
                },
            ],
        },
    )
    assert values["clips"][0]["end"] == "00:00:03.25"  # passed through for the steps


def test_latest_future_clip_end():
    now = datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    clips = [
        {"source": "https://e.com/a.m3u8", "start": "2030-01-01T09:00:00Z", "end": "2030-01-01T09:30:00Z"},
        {
            "source": "https://e.com/a.m3u8",
            "start": "2030-01-01T10:00:00Z",
            "end": "2030-01-01T10:45:00+00:00",
        },
        {
            "source": "https://e.com/a.m3u8",
            "start": "2030-01-01T10:00:00Z",
            "end": "2030-01-01T11:15:00+01:00",
        },
        {"source": "in/a.mp4", "start": 0, "end": 30},
        {"source": "broken", "end": "soon"},
    ]
    assert latest_future_clip_end({"clips": clips}, now=now) == now + timedelta(minutes=45)
    assert latest_future_clip_end({"clips": clips[:1]}, now=now) is None
    assert latest_future_clip_end({"content_id": "x"}) is None
    assert latest_future_clip_end(None) is None


def test_other_workflows_are_not_checked():
    assert validate_parameters("drmswitch", {"drm": ["widevine"]}) == {"drm": ["widevine"]}


# --- Bounded templates -----------------------------------------------------------------------------------


def doubling(levels: int, leaf: str = "x", name: str = "content_id") -> dict:
    """``name`` → t0 → … → t<levels>: each level names the next twice."""
    parameters: dict = {"content_id": "ep", "source_folder": "in", name: "{t0}"}
    for index in range(levels):
        parameters[f"t{index}"] = f"{{t{index + 1}}}{{t{index + 1}}}"
    parameters[f"t{levels}"] = leaf
    return parameters


def test_each_parameter_is_expanded_once(monkeypatch):
    from media import params

    calls: list[str] = []
    substitute = params._Templates._substitute

    def counting(self, name, text):
        calls.append(name)
        return substitute(self, name, text)

    monkeypatch.setattr(params._Templates, "_substitute", counting)
    # 2^8 = 256 copies of the leaf, through 255 references to each level's parameter.
    parameters = {**doubling(8, name="source_folder"), "output_folder": "{t0}/hls", "source_file": "{t0}.mp4"}
    values = resolve_parameters(parameters)

    assert values["source_folder"] == "x" * 256 and values["output_folder"] == "x" * 256 + "/hls"
    # Every template expanded once: each level, the three naming t0, and the defaults naming content_id.
    assert len(calls) == len(set(calls))
    assert {"source_folder", "output_folder", "source_file", *(f"t{i}" for i in range(8))} <= set(calls)


def test_doubling_templates_are_refused_at_the_depth_bound():
    # Naively 2^40 characters; refused after ten lookups.
    assert refused("vodstream", doubling(40)) == (
        "parameters.content_id: templates refer to templates more than 10 levels deep"
    )


def test_templates_within_the_depth_bound_resolve():
    chain = {"content_id": "{c1}", "source_folder": "in", "c9": "ep"}
    chain.update({f"c{index}": f"{{c{index + 1}}}" for index in range(1, 9)})

    assert validate_parameters("vodstream", chain)["content_id"] == "ep"


def test_a_chain_of_1500_references_is_a_refusal_not_a_recursion_error():
    chain = {"content_id": "{c0}", "source_folder": "in", "c1500": "ep"}
    chain.update({f"c{index}": f"{{c{index + 1}}}" for index in range(1500)})

    assert "more than 10 levels deep" in refused("vodstream", chain)


def test_an_expansion_stops_at_the_length_bound():
    # Shallow, so the depth bound does not apply: four copies of 1,100 characters.
    parameters = {"content_id": "{a}", "source_folder": "in", "a": "{b}{b}{b}{b}", "b": "x" * 1100}
    assert refused("vodstream", parameters) == "parameters.a: expands to more than 4096 characters"
    parameters["a"] = "{b}{b}{b}"
    # Within the expansion bound, the name's own bound applies.
    assert refused("vodstream", parameters) == "parameters.content_id: must be at most 128 characters"


def test_a_number_too_large_for_a_template_is_refused():
    assert refused("vodstream", {"content_id": "ep{n}", "source_folder": "in", "n": 10**400}) == (
        "parameters.content_id: {n} is too large a number"
    )


# --- What parameters become ------------------------------------------------------------------------------

CONTROLS = ["\x00", "\n", "\x1b", "\x7f", "\x85", "\x9f", "\u2028", "\u2029"]


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize(
    "name",
    [
        "content_id",
        "source_folder",
        "output_folder",
        "source_file",
        "mp4_filename",
        "thumbnail_filename",
        "frame_filename",
        "gif_filename",
        "thumbnails_vtt",
        "manifest_name",
        "key_uri",
        "storage_client",
    ],
)
def test_control_characters_are_refused(name, control):
    parameters = {"content_id": "ep", "source_folder": "in", name: f"a{control}b"}

    assert refused("vodstream", parameters) == f"parameters.{name}: must not contain control characters"


@pytest.mark.parametrize("control", ["\x1f", "\x85", "\u2028"])
def test_control_characters_are_refused_in_clip_sources_before_stripping(control):
    clips = [{"source": f"in/a.mp4{control}", "start": 0, "end": 1}]

    assert refused("vodcapture", {"content_id": "a", "output_folder": "o", "clips": clips}) == (
        "parameters.clips[0].source: must not contain control characters"
    )


def test_steps_refuse_what_submission_refuses():
    # A step resolves the job's parameters under its own (a client definition's step parameters).
    job = {"content_id": "ep", "source_folder": "in", "drm": "aes", "key_uri": "https://k.example/ep"}
    assert resolve_parameters(job)["key_uri"] == "https://k.example/ep"
    for step, message in [
        ({"manifest_name": "index.html"}, "parameters.manifest_name: must end in .m3u8"),
        ({"output_folder": "/etc"}, "parameters.output_folder: must be relative"),
        ({"key_uri": None}, "parameters.key_uri: required for drm aes"),
        ({"content_id": "{big}", "big": "{b}{b}{b}{b}{b}", "b": "y" * 1000}, "parameters.big: expands to"),
        ({"thumbnail_filename": "t\r.jpg"}, "parameters.thumbnail_filename: must not contain control"),
    ]:
        with pytest.raises(DomainError) as error:
            resolve_parameters({**job, **step})
        assert error.value.message.startswith(message), error.value.message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("content_id", "<img src=x onerror=alert(1)>"),
        ("content_id", "-i"),
        ("content_id", "ep%d"),
        ("content_id", "a" * 129),
        ("mp4_filename", "a" * 197 + ".mp4"),
        ("thumbnails_vtt", "player.html"),
        ("mp4_filename", "ep.svg"),
        ("gif_filename", "ep.js"),
        ("frame_filename", "ep.png"),
        ("thumbnail_filename", "sub/ep.jpg"),
        ("manifest_name", "ep.mpd"),
    ],
)
def test_output_names_are_safe_and_keep_their_extension(name, value):
    assert refused("vodstream", {"content_id": "ep", "source_folder": "in", name: value}).startswith(
        f"parameters.{name}: must "
    )


def test_safe_names_and_their_extensions_pass_in_any_case():
    values = validate_parameters(
        "vodstream",
        {
            "content_id": "A" * 128,
            "source_folder": "in",
            "mp4_filename": "Show-1_final.MP4",
            "thumbnail_filename": "poster.jpeg",
            "frame_filename": "frame.JPG",
        },
    )
    assert values["thumbnails_vtt"] == "A" * 128 + "_thumbnails.vtt"
    assert values["gif_filename"] == "A" * 128 + ".gif"


def test_key_uri_is_required_for_aes_only_and_has_no_default():
    assert resolve_parameters({"content_id": "ep"}).get("key_uri") is None
    assert refused("vodstream", {"content_id": "ep", "source_folder": "in", "drm": "aes"}) == (
        "parameters.key_uri: required for drm aes: the URL your players fetch the key from (keys are never "
        "published with the content)"
    )
    built = validate_parameters(
        "vodstream",
        {
            "content_id": "ep",
            "source_folder": "in",
            "drm": "aes",
            "key_uri": "http://keys.lan:8080/{content_id}?v=1&t=x",
        },
    )
    assert built["key_uri"] == "http://keys.lan:8080/ep?v=1&t=x"


@pytest.mark.parametrize(
    ("key_uri", "message"),
    [
        ("ep.key", "must be an absolute http(s) URL"),
        ("skd://ep", "must be an absolute http(s) URL"),
        ("https:///ep.key", "must be an absolute http(s) URL"),
        ("https://k.example:http/ep", "must be an absolute http(s) URL"),
        ('https://k.example/"ep', "must not contain spaces, double quotes or commas"),
        ("https://k.example/a,b", "must not contain spaces, double quotes or commas"),
        ("https://k.example/a b", "must not contain spaces, double quotes or commas"),
        ("https://k.example/a\u3000b", "must not contain spaces, double quotes or commas"),
        ("https://k.example/ep\n/etc/passwd", "must not contain control characters"),
        ("https://k.example/" + "k" * 2000, "must be at most 2000 characters"),
    ],
)
def test_key_uri_is_an_absolute_url_fit_for_one_playlist_line(key_uri, message):
    parameters = {"content_id": "ep", "source_folder": "in", "drm": "aes", "key_uri": key_uri}

    assert refused("vodstream", parameters) == f"parameters.key_uri: {message}"


def test_a_clear_only_workflow_asked_for_aes_hears_that_first():
    assert refused(
        "capture_frame", {"content_id": "a", "source_folder": "s", "frame_time": 1, "drm": "aes"}
    ) == ("parameters.drm: capture_frame makes clear output only")
