"""Callback signatures follow Standard Webhooks (issue 5, item 9) and pass its published test vector."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook

from taskengine_site import webhooks

# The specification's published vector (standard-webhooks/standard-webhooks, libraries' sign tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_reproduces_the_published_vector():
    assert webhooks.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    assert webhooks.sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY.encode()) == VECTOR_SIGNATURE


def test_the_secret_prefix_is_optional_as_the_specification_says():
    bare = VECTOR_SECRET.removeprefix("whsec_")
    assert webhooks.sign(bare, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_headers_carry_id_timestamp_and_signature():
    sent = webhooks.headers(VECTOR_SECRET, VECTOR_ID, VECTOR_BODY, timestamp=VECTOR_TIMESTAMP)
    assert sent == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }


def test_a_fresh_message_verifies_with_the_reference_library():
    secret = webhooks.generate_secret()
    assert secret.startswith("whsec_")
    body = '{"job_id":1,"status":"completed"}'
    sent = webhooks.headers(secret, webhooks.new_message_id(), body)
    assert abs(int(sent["webhook-timestamp"]) - time.time()) < 5
    assert Webhook(secret).verify(body, sent) == {"job_id": 1, "status": "completed"}
    assert webhooks.verify(secret, body.encode(), sent)["status"] == "completed"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body, h: (body.replace("completed", "failed"), h),
        lambda body, h: (body, h | {"webhook-id": "msg_other"}),
        lambda body, h: (body, h | {"webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}),
        lambda body, h: (body, h | {"webhook-signature": VECTOR_SIGNATURE}),
        lambda body, h: (body, {k: v for k, v in h.items() if k != "webhook-signature"}),
    ],
)
def test_tampering_fails_verification(tamper):
    secret = webhooks.generate_secret()
    body = '{"job_id":1,"status":"completed"}'
    received_body, received = tamper(body, webhooks.headers(secret, "msg_1", body))
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(secret, received_body, received)


def test_a_stale_timestamp_fails_verification():
    secret = webhooks.generate_secret()
    body = "{}"
    old = webhooks.headers(secret, "msg_1", body, timestamp=int(time.time()) - 3600)
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(secret, body, old)


def test_message_ids_are_unique():
    assert len({webhooks.new_message_id() for _ in range(1000)}) == 1000
