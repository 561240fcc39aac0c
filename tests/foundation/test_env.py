"""Configuration from the environment: typed parsing, and refusal of malformed values at start-up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from taskengine_site import env

ROOT = Path(__file__).resolve().parents[2]


def test_bool_accepts_the_usual_spellings():
    assert env.env_bool("X", False, {"X": "TRUE"}) is True
    assert env.env_bool("X", True, {"X": "off"}) is False
    assert env.env_bool("X", True, {}) is True


def test_bool_refuses_anything_else_and_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match=r"^DEBUG: expected true or false, got 'maybe'$"):
        env.env_bool("DEBUG", False, {"DEBUG": "maybe"})


def test_choice_is_one_word_of_its_set_in_any_case():
    modes = ("auto", "off", "required")
    assert env.env_choice("X", "auto", modes, {}) == "auto"
    assert env.env_choice("X", "auto", modes, {"X": " Required "}) == "required"
    with pytest.raises(ImproperlyConfigured, match="TASKENGINE_FFMPEG_SANDBOX: expected one of auto, off"):
        env.env_choice("TASKENGINE_FFMPEG_SANDBOX", "auto", modes, {"TASKENGINE_FFMPEG_SANDBOX": "on"})


def test_int_bounds_and_garbage():
    assert env.env_int("PORT", 8000, environ_={"PORT": "9000"}) == 9000
    assert env.env_int("PORT", 8000, environ_={}) == 8000
    with pytest.raises(ImproperlyConfigured, match="PORT: expected an integer, got 'eighty'"):
        env.env_int("PORT", 8000, environ_={"PORT": "eighty"})
    with pytest.raises(ImproperlyConfigured, match="PORT: must be at most 65535, got 70000"):
        env.env_int("PORT", 8000, maximum=65535, environ_={"PORT": "70000"})


def test_list_splits_commas_and_refuses_spaces_inside_items():
    assert env.env_list("ALLOWED_HOSTS", [], {"ALLOWED_HOSTS": "a.example, b.example,"}) == [
        "a.example",
        "b.example",
    ]
    with pytest.raises(ImproperlyConfigured, match="ALLOWED_HOSTS"):
        env.env_list("ALLOWED_HOSTS", [], {"ALLOWED_HOSTS": "a b"})


def test_ints_split_commas_and_keep_their_bounds():
    assert env.env_ints("X", (5, 15), environ_={}) == (5, 15)
    assert env.env_ints("X", (5, 15), environ_={"X": " 0, 30 ,"}) == (0, 30)
    assert env.env_ints("X", (5, 15), environ_={"X": ""}) == ()
    with pytest.raises(ImproperlyConfigured, match="X: expected an integer, got 'soon'"):
        env.env_ints("X", (), environ_={"X": "5,soon"})
    with pytest.raises(ImproperlyConfigured, match="X: must be at least 0, got -5"):
        env.env_ints("X", (), minimum=0, environ_={"X": "1,-5"})


def test_database_url_parsing():
    config = env.env_database("DATABASE_URL", {"DATABASE_URL": "postgres://root@127.0.0.1:5432/engine"})
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["HOST"], config["PORT"]) == (
        "engine",
        "root",
        "127.0.0.1",
        5432,
    )
    socket = env.env_database("DATABASE_URL", {"DATABASE_URL": "postgresql://postgres:@/engine?host=/run/pg"})
    assert socket["NAME"] == "engine" and socket["OPTIONS"]["host"] == "/run/pg"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("mysql://u@h/db", "expected a postgres:// URL"),
        ("postgres://u@h:5432", "names no database"),
        ("nonsense", "expected a postgres:// URL"),
        ("", "DATABASE_URL is not set"),
    ],
)
def test_database_url_refusals_name_the_variable(value, reason):
    with pytest.raises(ImproperlyConfigured, match=reason) as info:
        env.env_database("DATABASE_URL", {"DATABASE_URL": value})
    assert "DATABASE_URL" in str(info.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http://h:6379/0", "expected a redis://"),
        ("redis://:6379/0", "names no host"),
        ("redis://h:port/0", "port is not a valid number"),
        ("redis://h:6379/zero", "database 'zero' is not a number"),
        ("unix://", "needs a socket path"),
    ],
)
def test_redis_url_refusals_name_the_variable(value, reason):
    with pytest.raises(ImproperlyConfigured, match=reason) as info:
        env.env_redis("REDIS_URL", {"REDIS_URL": value})
    assert "REDIS_URL" in str(info.value)


def test_unix_socket_redis_url_becomes_celery_spelling():
    assert env.celery_broker_url("unix:///tmp/r.sock") == "redis+socket:///tmp/r.sock"
    assert env.celery_broker_url("redis://h:6379/1") == "redis://h:6379/1"


def test_storage_root_must_be_absolute():
    with pytest.raises(ImproperlyConfigured, match="TASKENGINE_STORAGE_ROOT: expected an absolute path"):
        env.env_path("TASKENGINE_STORAGE_ROOT", Path("/x"), {"TASKENGINE_STORAGE_ROOT": "relative/dir"})


def _start(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Start Django in a fresh process with the current environment plus ``extra``."""
    environ = {**os.environ, **extra}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)",
        ],
        cwd=ROOT,
        env={**environ, "DJANGO_SETTINGS_MODULE": "taskengine_site.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEBUG", "perhaps"),
        ("PORT", "http"),
        ("DATABASE_URL", "sqlite:///db.sqlite3"),
        ("REDIS_URL", "memcached://localhost"),
        ("TASKENGINE_ALLOW_PRIVATE_URLS", "sometimes"),
        ("TASKENGINE_PUBLIC_JOB_LIST", "2"),
        ("TASKENGINE_STORAGE_ROOT", "not/absolute"),
        ("ALLOWED_HOSTS", "a b"),
        ("SECRET_KEY", ""),
        ("TASKENGINE_RATE_LIMIT", "lots/minute"),
        ("TASKENGINE_NUM_PROXIES", "-1"),
        ("TASKENGINE_FFMPEG_SANDBOX", "sometimes"),
        ("TASKENGINE_CALLBACK_RETRY_DELAYS", "5,soon"),
        ("TASKENGINE_WORK_DIR", "relative/work"),
    ],
)
def test_a_malformed_variable_stops_start_up_naming_it(variable, value):
    result = _start({variable: value})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured:")
    assert variable in last


def test_debug_is_off_unless_asked_for():
    environ = {k: v for k, v in os.environ.items() if k != "DEBUG"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)",
        ],
        cwd=ROOT,
        env={**environ, "DJANGO_SETTINGS_MODULE": "taskengine_site.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "False"
    assert _start({"DEBUG": "true"}).stdout.strip() == "True"


def test_check_deploy_is_clean_with_a_production_environment():
    production = {
        "DEBUG": "false",
        "SECRET_KEY": "p" * 20 + "k9#Lm2$Qz7!xR4wT8vN3@bY6&cF1^hJ5",
        "TASKENGINE_HTTPS": "true",
        "ALLOWED_HOSTS": "taskengine.example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**os.environ, **production},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_metrics_token_and_rate_limit_come_from_the_environment():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.TASKENGINE_METRICS_TOKEN, settings.TASKENGINE_RATE_LIMIT)",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "taskengine_site.settings",
            "TASKENGINE_METRICS_TOKEN": "from-env",
            "TASKENGINE_RATE_LIMIT": "30/second",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["from-env", "30/second"]


def _readme_variables() -> set[str]:
    """The variables named in the first column of the README's environment table."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    return names


def _application_sources() -> list[Path]:
    packages = [
        p for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name not in {"tests", "bench"}
    ]
    return [path for package in packages for path in package.rglob("*.py") if "migrations" not in path.parts]


def test_every_setting_is_in_the_readme_table_and_every_row_is_read():
    settings_source = (ROOT / "taskengine_site" / "settings.py").read_text()
    defined = set(re.findall(r'\benv_\w+\(\s*"([A-Z][A-Z0-9_]*)"', settings_source))
    documented = _readme_variables()
    assert defined - documented == set(), "defined in settings.py, missing from the README table"
    procfile = (ROOT / "Procfile").read_text()
    read_elsewhere = {
        name
        for name in documented - defined
        if f"${{{name}" in procfile or any(f'"{name}"' in path.read_text() for path in _application_sources())
    }
    assert documented - defined - read_elsewhere == set(), "in the README table, read nowhere"


def test_settings_are_read_as_settings_attributes_without_a_second_default():
    offenders = [
        str(path.relative_to(ROOT))
        for path in _application_sources()
        if re.search(r"getattr\(\s*settings\s*,", path.read_text())
    ]
    assert offenders == []
