"""Setting-change hooks: each app registers its own in AppConfig.ready, once."""

from __future__ import annotations

from django.apps import apps

from jobs.engine import dispatcher
from scheduling import beat
from settings_app import effects


def test_every_app_registers_its_hook_once_when_the_apps_are_loaded():
    hooks = list(effects._HOOKS)
    assert dispatcher.on_setting_changed in hooks
    assert beat.on_setting_changed in hooks
    apps.get_app_config("jobs").ready()
    apps.get_app_config("scheduling").ready()
    assert hooks == effects._HOOKS
