import pytest

from clients.models import Client
from jobs.states import JobState
from tests import factories
from tests.callbacks.support import allow_loopback, committed, queues, receiver  # noqa: F401


@pytest.fixture
def make_job(make_client):
    def factory(
        endpoints, *, secret: str = "", steps=("get_filenames", "prepare_switch", "rename_manifests")
    ):
        client, _ = make_client()
        if secret:
            # Set on the row directly: client_create refuses a malformed secret, but a row edited by
            # hand (or by an older release) may still hold one.
            Client.objects.filter(pk=client.pk).update(webhook_secret=secret)
            client.refresh_from_db()
        parameters = {
            "content_id": "c-42",
            "folder": "vod/c-42",
            "drm": ["widevine"],
            "custom_data": {"order": 7},
            "rest_endpoints": endpoints,
        }
        return factories.job(
            client, workflow="drmswitch", queue_state=JobState.STARTED, tasks=steps, parameters=parameters
        )

    return factory
