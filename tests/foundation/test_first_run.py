"""A newcomer's first run: `make run` installs what running needs and no more, and the wrapped commands
and processes start without warnings nobody can act on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "XDG_RUNTIME_DIR"}}
    env.update(extra)
    return env


def test_make_run_syncs_the_runtime_dependencies_without_the_dev_group():
    # -n prints what would run; -W pretends the lock changed, so the sync's command line is printed.
    run = subprocess.run(
        ["make", "-n", "-W", "uv.lock", "venv-run"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    sync = [line for line in run.stdout.splitlines() if " sync " in line]
    assert sync and all("--no-dev" in line and "--inexact" in line for line in sync), run.stdout
    for target in ("test", "check"):
        dry = subprocess.run(
            ["make", "-n", "-W", "uv.lock", target], cwd=ROOT, capture_output=True, text=True, check=True
        )
        sync = [line for line in dry.stdout.splitlines() if " sync " in line]
        assert sync and not any("--no-dev" in line for line in sync), dry.stdout


# Every module the processes of the Procfile (and manage.py) load, imported with the dev group's packages
# made unimportable: what `make run` installs is enough to run.
_IMPORT_WITHOUT_DEV = """
import importlib, pkgutil, sys
blocked = set(sys.argv[1].split(","))

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ImportError(f"{name} belongs to the dev dependency group")
        return None

sys.meta_path.insert(0, Block())
import django
django.setup()
import taskengine_site.wsgi, taskengine_site.urls, taskengine_site.celery, taskengine_site.devservices
import taskengine_cli.main
for package in sys.argv[2].split(","):
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if ".migrations" not in info.name and ".management" not in info.name:
            importlib.import_module(info.name)
print("imported")
"""


def _dev_only_modules() -> set[str]:
    from importlib import metadata

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    name = re.compile(r"^[A-Za-z0-9_.-]+")

    def dist(requirement: str) -> str:
        match = name.match(requirement)
        assert match, requirement
        return match.group(0).lower().replace("_", "-")

    runtime = {dist(r) for r in project["project"]["dependencies"]}
    dev = {dist(r) for r in project["dependency-groups"]["dev"]} - runtime
    modules = set()
    for module, dists in metadata.packages_distributions().items():
        if {d.lower().replace("_", "-") for d in dists} & dev:
            modules.add(module)
    # The group's test tools are the point of the check: they must be among the blocked modules.
    assert {"pytest", "mypy", "moto", "selenium"} <= modules
    return modules


def test_the_application_imports_without_the_dev_group():
    apps = ["clients", "jobs", "callbacks", "media", "logs", "monitoring", "scheduling", "settings_app"]
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHOUT_DEV, ",".join(sorted(_dev_only_modules())), ",".join(apps)],
        cwd=ROOT,
        env=dict(os.environ, DJANGO_SETTINGS_MODULE="taskengine_site.settings"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "imported", result.stderr[-3000:]


def test_devservices_start_and_stop_without_a_runtime_dir_warning(tmp_path: Path):
    # No XDG_RUNTIME_DIR, as in a container or an ssh session: the embedded services still start quietly.
    result = subprocess.run(
        [sys.executable, "-m", "taskengine_site.devservices", "run", "--", "true"],
        cwd=ROOT,
        env=_clean_env(TASKENGINE_DATA_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "started the embedded PostgreSQL" in result.stderr
    assert "started the embedded Redis" in result.stderr
    assert "Warning" not in result.stderr, result.stderr


def test_a_worker_started_as_root_does_not_warn_about_it():
    # Celery's check at worker start, as root: the engine accepts JSON only, so nothing is printed.
    code = (
        "import os; os.getuid = os.geteuid = lambda: 0\n"
        "from taskengine_site.celery import app\n"
        "from celery import platforms\n"
        "assert 'pickle' not in app.conf.accept_content\n"
        "platforms.check_privileges(app.conf.accept_content)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "superuser" not in result.stderr, result.stderr


def test_the_web_process_has_no_shared_control_socket():
    # gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl): every instance
    # on the machine would share it, and the first to stop would remove it for the others.
    web = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    command = web.split(":", 1)[1].replace("${", "${X_").strip()  # the defaults of ${VAR:-default}
    assert "--no-control-socket" in command.split()
    check = subprocess.run(
        ["sh", "-c", command + " --check-config"],
        cwd=ROOT,
        env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr[-2000:]


def test_make_manage_runs_a_command_as_the_readme_shows_it(transactional_db, tmp_path: Path):
    from clients.models import Client
    from tests.e2e.conftest import database_url

    # As a newcomer types it, without SECRET_KEY: the wrapper supplies the one kept in the data folder.
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update(DATABASE_URL=database_url(), TASKENGINE_DATA_DIR=str(tmp_path))
    result = subprocess.run(
        ["make", "--no-print-directory", "manage", "ARGS=create_client acme"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("te_"), result.stdout
    assert Client.objects.filter(name="acme", is_operator=False).exists()
    assert (tmp_path / "secret_key").exists()
