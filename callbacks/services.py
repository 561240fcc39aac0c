"""Callbacks to a job's ``rest_endpoints`` (DESIGN.md §6; reference: workflows-and-callbacks.md).

``task_event`` and ``job_finished`` are called by the engine inside its own transactions. They compute
the callback body once, store one ``CallbackDelivery`` per endpoint, and publish a delivery task on the
``callback`` queue after the commit. They never raise: a callback can neither fail nor delay a job.

Delivery (``callback_deliver``) POSTs the stored body through the outbound URL guard with the
``Workflow-Id`` header and, when the client has a webhook secret, Standard Webhooks signature headers.
A non-2xx answer or a network error is retried with exponential backoff
(``settings.TASKENGINE_CALLBACK_RETRY_DELAYS``; short delays as countdown messages, longer ones by the
recovery sweep); each
attempt's outcome is a line in the job's log (progname ``callback``). Deliveries to one URL of one job
go out in the order their events happened: a delivery waits while an earlier one to the same URL is
still pending, and each finished delivery publishes the next (and marks it due).

Deliveries run on threads of the ``control`` process (Procfile), which consumes no step queue, so a long
step never holds a callback back. While an attempt is in flight a lease on its row is renewed every
``LEASE_BEAT`` seconds (``callbacks.leases``); the recovery sweep (``callbacks_redeliver``, a beat
schedule every few seconds) re-sends at once, without counting the attempt, a delivery whose lease ran
out (its process was killed), and re-publishes a due delivery that has had no message for ``LOST_AFTER``
(a flushed Redis, a message held by a killed process): never after the broker's visibility timeout.
A receiver with a request outstanding for over ``SLOW_REQUEST_SECONDS`` gets at most
``TASKENGINE_CALLBACK_SLOW_HOST_LIMIT`` requests at once; its next deliveries are deferred, not counted
as attempts, so it cannot take every sending thread from the other clients' receivers.

The job callback's ``files`` and ``metadata`` come from the results of the job's completed tasks: a
step that returns ``{"files": [...]}`` or ``{"metadata": {...}}`` (or a ``duration``) contributes them.

Secret fields (the media app's content ``keys``, through ``registry.register_job_callback_fields``) go
only into a signed job callback, and only as it is sent: the stored body never holds them, so the
deliveries table (and its admin page) holds no plaintext secret, and a client without a webhook secret
gets none. They are the same on every attempt, so a retried delivery sends the same body.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from callbacks import leases
from callbacks.models import CallbackDelivery
from clients.crypto import SecretUnreadable
from clients.models import Client
from jobs.engine import bus
from jobs.engine.sql import load
from jobs.models import Job, Task
from jobs.workflows import registry
from logs.models import Severity
from logs.services import job_log
from taskengine_site import outbound, prepared, shutdown, webhooks

logger = logging.getLogger(__name__)

# The delivery's hot statements, by name (callbacks/sql/deliveries.sql; same layout as the engine's).
_SQL = load(Path(__file__).with_name("sql"))

PROGNAME = "callback"
TASK_EVENTS = ("start", "complete", "fail")
TIMEOUT = (3.05, 10.0)
# The whole attempt, however its receiver drips its answer: well inside a stopping process's grace.
ATTEMPT_DEADLINE = 15.0
MAX_RESPONSE_BYTES = 65_536
# A claimed delivery's lease; its sender renews it every LEASE_BEAT seconds while the attempt is in
# flight (callbacks.leases), so a lease that ran out means the sender is gone.
LEASE = timedelta(seconds=8)
# A due delivery that nothing has claimed for this long has lost its message (its sender publishes it
# when it becomes due, and the control process takes it within milliseconds).
LOST_AFTER = timedelta(seconds=5)
# Kept for callers of the previous name.
REDELIVER_AFTER = LOST_AFTER
# A request outstanding for longer than this counts towards its host's slow limit: well above what a
# receiver that answers at all takes, even on a loaded machine (at 1 s, a receiver slowed by the load
# of its own machine had the engine's callbacks to it deferred one after the other).
SLOW_REQUEST_SECONDS = 2.0


def format_time(moment: datetime) -> str:
    """UTC with milliseconds and a Z, as the original sends it: ``2019-11-29T10:47:50.431Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _endpoints(job: Job) -> list[str]:
    endpoints = (job.parameters or {}).get("rest_endpoints") or []
    if isinstance(endpoints, str):
        endpoints = [endpoints]
    if not isinstance(endpoints, list):
        return []
    unique: list[str] = []
    for url in endpoints:
        if isinstance(url, str) and url and url not in unique:
            unique.append(url)
    return unique


def task_event(task_id: int, event: str, message: str = "") -> None:
    """Record the callbacks of a task event (``start``, ``complete`` or ``fail``) and send them after
    the commit. Never raises."""
    try:
        with transaction.atomic():
            task = Task.objects.select_related("job__client").filter(pk=task_id).first()
            if task is None or event not in TASK_EVENTS:
                return
            job = task.job
            endpoints = _endpoints(job)
            if not endpoints:
                return
            payload = {
                "job_id": job.pk,
                "task_id": task.pk,
                "task_name": task.name,
                "workflow": job.workflow,
                "event": event,
                "content_id": (job.parameters or {}).get("content_id"),
                "message": message,
                "time": format_time(timezone.now()),
                "client": job.client.name,
            }
            _record(job, task_id=task.pk, kind="task", event=event, payload=payload, endpoints=endpoints)
    except Exception:
        logger.exception("could not record the %s callback of task %s", event, task_id)


def job_finished(job_id: int) -> None:
    """Record the job callback (status ``completed`` or ``failed``) and send it after the commit.
    Never raises."""
    try:
        with transaction.atomic():
            job = Job.objects.select_related("client").filter(pk=job_id).first()
            if job is None:
                return
            endpoints = _endpoints(job)
            if not endpoints:
                return
            status = "failed" if job.failed else "completed"
            files, metadata, made = _collect_outputs(job)
            parameters = job.parameters or {}
            payload = {
                "job_id": job.pk,
                "status": status,
                "workflow": job.workflow,
                "content_id": parameters.get("content_id"),
                "custom_data": parameters.get("custom_data"),
                # A failed job's own message says why; a completed one names what it made (media steps
                # return the manifest or file as their result's message).
                "message": job.message
                or ("job has failed" if job.failed else made or "job has completed successfully"),
                "files": files,
                "metadata": metadata,
                "time": format_time(timezone.now()),
                "client": job.client.name,
            }
            last_task = Task.objects.filter(job_id=job.pk).order_by("-position").values_list("pk", flat=True)
            _record(
                job,
                task_id=last_task.first() or 0,
                kind="job",
                event=status,
                payload=payload,
                endpoints=endpoints,
            )
    except Exception:
        logger.exception("could not record the job callback of job %s", job_id)


def _collect_outputs(job: Job) -> tuple[list[Any], dict[str, Any], str]:
    """Files, metadata and the last ``message`` that the job's task results report, in step order."""
    files: list[Any] = []
    metadata: dict[str, Any] = {}
    made = ""
    results = Task.objects.filter(job_id=job.pk, result__isnull=False).order_by("position")
    for result in results.values_list("result", flat=True):
        if not isinstance(result, dict):
            continue
        if isinstance(result.get("files"), list):
            files.extend(result["files"])
        if isinstance(result.get("metadata"), dict):
            metadata.update(result["metadata"])
        if "duration" in result:
            metadata["duration"] = result["duration"]
        if isinstance(result.get("message"), str):
            made = result["message"]
    return files, metadata, made


def _record(
    job: Job, *, task_id: int, kind: str, event: str, payload: dict[str, Any], endpoints: list[str]
) -> None:
    body = _serialise(payload)
    rows = CallbackDelivery.objects.bulk_create(
        CallbackDelivery(
            job_id=job.pk,
            task_id=task_id,
            kind=kind,
            event=event,
            url=url,
            body=body,
            webhook_id=webhooks.new_message_id(),
        )
        for url in endpoints
    )
    ids = [row.pk for row in rows]
    # robust: a broker outage at commit time must not break the engine's transaction; the redelivery
    # schedule publishes what was stored.
    transaction.on_commit(lambda: _publish(ids), robust=True)


def _publish(delivery_ids: list[int], countdown: float | None = None) -> None:
    for delivery_id in delivery_ids:
        bus.send_delivery(delivery_id, countdown=countdown)


def retry_delays() -> tuple[int, ...]:
    """Backoff after each failed attempt; its length + 1 is the number of attempts.

    Never longer than most of the broker's visibility timeout: a message held longer would be
    delivered a second time.
    """
    ceiling = int(bus.countdown_ceiling())
    return tuple(min(int(delay), ceiling) for delay in settings.TASKENGINE_CALLBACK_RETRY_DELAYS)


def _with_secret_fields(body: str, job_id: int) -> str:
    """The stored job callback ``body`` with the registered secret fields of job ``job_id`` added."""
    extra = registry.job_callback_fields(job_id)
    if not extra:
        return body
    payload = json.loads(body)
    payload.update(extra)
    return _serialise(payload)


def _serialise(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)


def _task_name(row: Claimed) -> str | None:
    """The task's name as its callback's body holds it (a job callback names none)."""
    if row.kind != "task":
        return None
    try:
        name = json.loads(row.body).get("task_name")
    except (ValueError, AttributeError):
        name = None
    if isinstance(name, str):
        return name
    return Task.objects.filter(pk=row.task_id).values_list("name", flat=True).first()


def _describe(row: Claimed, task_name: str | None) -> str:
    if row.kind == "job":
        return f"Job callback ({row.event})"
    return f"'{task_name}' {row.event} callback"


@dataclass
class Claimed:
    """A delivery claimed for one attempt, with what sending it needs (one statement read it all)."""

    pk: int
    job_id: int
    task_id: int
    kind: str
    event: str
    url: str
    body: str
    webhook_id: str
    attempts: int
    workflow_uuid: Any
    client_name: str
    stored_secret: str | None
    first_of_job: bool
    own_definitions: bool
    # Log lines written with the attempt's outcome, in order, before its own line.
    lines: list[tuple[str, int]] = field(default_factory=list)
    # The next delivery of its (job, URL) line, marked due when this attempt recorded this one done.
    successor: int | None = None


def _claim(delivery_id: int, now: datetime) -> Claimed | None:
    """Claim ``delivery_id`` for one attempt (compare-and-set on its lease; one statement), or None
    when it is not due, already claimed, done, or waiting behind an earlier delivery of its line."""
    params: dict[str, Any] = {
        "id": delivery_id,
        "now": now,
        "lease_until": now + LEASE,
        "due_by": now + timedelta(seconds=1),
        "pending": int(CallbackDelivery.State.PENDING),
    }
    with prepared.cursor() as cursor:
        cursor.execute(_SQL["claim_delivery"].text, params)
        found = cursor.fetchone()
    return Claimed(*found) if found else None


# Deliveries one message may send one after the other down their (job, URL) line.
CHAIN = 10


def callback_deliver(*, delivery_id: int) -> str:
    """Make one attempt at a stored callback; return what happened (sent, retry, failed, skipped,
    deferred, handed back).

    Claims the delivery first (compare-and-set on its lease), so a duplicate message is a no-op, and
    skips it while an earlier delivery to the same URL of the same job is still pending (that one
    sends this one when it is done). A process told to stop hands the message back unclaimed.
    Two statements in all: the claim (which reads what the attempt needs) and the outcome's record.

    A delivery that is done goes on with the next of its line on the same thread (up to ``CHAIN`` in
    all), as a worker chains a job's steps: a step's ``start``, its ``complete`` and the job's end go
    out one after the other without a message each through Redis. The next one's own message, if it
    comes later, finds it sent and is skipped.
    """
    outcome, successor = _deliver_one(delivery_id)
    for _ in range(CHAIN - 1):
        if successor is None:
            return outcome
        if shutdown.requested():
            break
        _, successor = _deliver_one(successor)
    if successor is not None:
        _publish([successor])
    return outcome


def _deliver_one(delivery_id: int) -> tuple[str, int | None]:
    """One attempt at ``delivery_id``: what happened, and the next delivery of its line when this one
    is done and handed the line on."""
    if shutdown.requested():
        _publish([delivery_id])
        return "handed back", None
    now = timezone.now()
    row = _claim(delivery_id, now)
    if row is None:
        return "skipped", None
    host = _host(row.url)
    wait = leases.slow_host_wait(
        host, settings.TASKENGINE_CALLBACK_SLOW_HOST_LIMIT, SLOW_REQUEST_SECONDS, ATTEMPT_DEADLINE
    )
    if wait is not None:
        return _defer(row, now, wait), None
    leases.hold(row.pk, host, claimed_at=now, lease=LEASE)
    try:
        return _attempt(row, claimed_at=now), row.successor
    finally:
        leases.release(row.pk, slow_after=SLOW_REQUEST_SECONDS)


def _host(url: str) -> str:
    """The host and port a URL's requests go to: the unit the slow-host limit counts by."""
    try:
        parts = urlsplit(url)
        return f"{(parts.hostname or '').lower()}:{parts.port or ''}"
    except ValueError:
        return url


def _defer(row: Claimed, claimed_at: datetime, wait: float) -> str:
    """Put a claimed delivery back for ``wait`` seconds without counting an attempt: its receiver is
    slow for every request this process has outstanding to it."""
    due = timezone.now() + timedelta(seconds=wait)
    updated = CallbackDelivery.objects.filter(pk=row.pk, claimed_at=claimed_at).update(
        lease_until=None, claimed_at=None, attempts=Greatest(F("attempts") - 1, 0), next_attempt_at=due
    )
    if updated:
        _publish([row.pk], countdown=wait)
    return "deferred"


def _attempt(row: Claimed, *, claimed_at: datetime) -> str:
    """Send a claimed delivery once and record the outcome (fenced by ``claimed_at``)."""
    what = _describe(row, _task_name(row))
    url = outbound.redact(row.url)
    delays = retry_delays()
    max_attempts = len(delays) + 1

    if row.first_of_job:
        row.lines.append(
            (
                "Using client definitions."
                if row.own_definitions
                else "No client definitions. Using common definitions.",
                Severity.INFO,
            )
        )

    headers = {"Workflow-Id": str(row.workflow_uuid), "Content-Type": "application/json"}
    try:
        secret = Client.stored_webhook_secret(row.client_name, row.stored_secret)
    except SecretUnreadable:
        return _not_sent(
            row,
            claimed_at,
            "the client's webhook secret cannot be decrypted with the configured keys",
            f"{what} to {url} not sent: the client's webhook secret cannot be decrypted",
        )
    body = row.body
    if secret and row.kind == "job":
        try:
            body = _with_secret_fields(row.body, row.job_id)
        except SecretUnreadable:
            return _not_sent(
                row,
                claimed_at,
                "the job's content keys cannot be decrypted with the configured keys",
                f"{what} to {url} not sent: the job's content keys cannot be decrypted",
            )
    if secret:
        try:
            headers.update(webhooks.headers(secret, row.webhook_id, body))
        except Exception:
            # Sending unsigned would let a receiver that checks signatures accept nothing, or worse,
            # one that does not check learn nothing is wrong: refuse, and say why.
            return _not_sent(
                row,
                claimed_at,
                "the client's webhook secret is not a valid whsec_<base64> secret",
                f"{what} to {url} not sent: the client's webhook secret is not valid",
            )
    status: int | None = None
    try:
        response = outbound.request(
            "POST",
            row.url,
            data=body.encode(),
            headers=headers,
            timeout=TIMEOUT,
            max_bytes=MAX_RESPONSE_BYTES,
            deadline=ATTEMPT_DEADLINE,
        )
        status = response.status_code
        error = "" if response.ok else f"HTTP {status}"
    except outbound.UrlRefused as exc:
        return _not_sent(row, claimed_at, exc.message, f"{what} to {url} not sent: {exc.message}")
    except outbound.OutboundError as exc:
        error = str(exc)
    except Exception as exc:
        # Whatever went wrong, the attempt is counted and retried like a network error, so a
        # delivery can never loop outside its bounded number of attempts.
        logger.exception("callback delivery %s failed unexpectedly", row.pk)
        error = type(exc).__name__

    attempt = f"attempt {row.attempts} of {max_attempts}"
    if not error:
        row.lines.append((f"{what} sent to {url} (HTTP {status}, {attempt})", Severity.INFO))
        return _record_attempt(
            row, claimed_at, state=CallbackDelivery.State.SENT, status=status, outcome="sent"
        )
    if row.attempts >= max_attempts:
        row.lines.append((f"{what} to {url} failed: {error} ({attempt}); giving up", Severity.ERROR))
        return _record_attempt(
            row, claimed_at, state=CallbackDelivery.State.FAILED, status=status, error=error, outcome="failed"
        )
    delay = delays[row.attempts - 1]
    row.lines.append((f"{what} to {url} failed: {error} ({attempt}); retrying in {delay}s", Severity.WARN))
    _record_attempt(
        row,
        claimed_at,
        state=CallbackDelivery.State.PENDING,
        status=status,
        error=error,
        outcome="retry",
        retry_in=delay,
    )
    return "retry"


def _not_sent(row: Claimed, claimed_at: datetime, error: str, line: str) -> str:
    """Give up a delivery that cannot be sent as it should be (no retry can help), saying why."""
    row.lines.append((line, Severity.ERROR))
    return _record_attempt(
        row, claimed_at, state=CallbackDelivery.State.FAILED, error=error, outcome="failed"
    )


def _record_attempt(
    row: Claimed,
    claimed_at: datetime,
    *,
    state: int,
    outcome: str,
    status: int | None = None,
    error: str = "",
    retry_in: int | None = None,
) -> str:
    """Record the attempt's outcome, its log lines and (when the delivery is done) the next delivery's
    turn in one commit; then publish what comes next. ``skipped`` when the claim no
    longer holds (the sweep gave the delivery to another attempt)."""
    now = timezone.now()
    params: dict[str, Any] = {
        "id": row.pk,
        "claimed_at": claimed_at,
        "state": int(state),
        "pending": int(CallbackDelivery.State.PENDING),
        "status": status,
        "error": error,
        "sent_at": now if state == CallbackDelivery.State.SENT else None,
        "next_attempt_at": now + timedelta(seconds=retry_in) if retry_in is not None else None,
        "task_id": row.task_id,
        "progname": PROGNAME,
        "messages": [message for message, _ in row.lines],
        "severities": [int(severity) for _, severity in row.lines],
        "now": now,
    }
    successor = None
    # One commit; a delivery that is done hands the line on to its successor in the same transaction.
    with transaction.atomic(), prepared.cursor() as cursor:
        cursor.execute(_SQL["record_attempt"].text, params)
        (recorded,) = cursor.fetchone()
        if not recorded:
            return "skipped"
        if state != CallbackDelivery.State.PENDING:
            line = {
                "job_id": row.job_id,
                "url": row.url,
                "id": row.pk,
                "pending": params["pending"],
                "now": now,
            }
            cursor.execute(_SQL["next_in_line"].text, line)
            found = cursor.fetchone()
            successor = found[0] if found else None
    # Sent next by the same thread (callback_deliver); published when it cannot be.
    row.successor = successor
    if retry_in is not None and retry_in <= bus.MAX_COUNTDOWN_SECONDS:
        transaction.on_commit(lambda: _publish([row.pk], countdown=retry_in), robust=True)
    return outcome


def callbacks_redeliver(*, now: datetime | None = None, limit: int = 1000) -> int:
    """The deliveries' reconciler: re-send what Postgres says is due but nothing is sending. Returns how
    many deliveries it re-published.

    * A claimed delivery whose lease ran out was interrupted (its process was killed): the attempt is
      not counted against the receiver's back-off and the delivery is sent again at once.
    * A due delivery, first of its (job, URL) line, unclaimed for ``LOST_AFTER`` has lost its message
      (a flushed Redis, a message a killed process held): published again, and marked due now so the
      next sweep waits as long again for this message.
    """
    now = now or timezone.now()
    pending = CallbackDelivery.objects.filter(state=CallbackDelivery.State.PENDING)
    interrupted = list(
        pending.filter(lease_until__lt=now)
        .order_by("id")
        .values_list("pk", "job_id", "task_id", "kind", "event", "url")[:limit]
    )
    resent: list[int] = []
    for pk, job_id, task_id, kind, event, url in interrupted:
        if pending.filter(pk=pk, lease_until__lt=now).update(
            lease_until=None, claimed_at=None, attempts=Greatest(F("attempts") - 1, 0), next_attempt_at=now
        ):
            what = f"Job callback ({event})" if kind == "job" else f"Task {event} callback"
            job_log(
                job_id,
                f"{what} to {outbound.redact(url)} interrupted (its sender stopped); sending again",
                progname=PROGNAME,
                severity=Severity.WARN,
                task_id=task_id,
            )
            resent.append(pk)
    earlier_pending = CallbackDelivery.objects.filter(
        job_id=OuterRef("job_id"),
        url=OuterRef("url"),
        id__lt=OuterRef("id"),
        state=CallbackDelivery.State.PENDING,
    )
    lost = list(
        pending.filter(lease_until__isnull=True)
        .annotate(due=Coalesce("next_attempt_at", "created_at"))
        .filter(due__lte=now - LOST_AFTER)
        .exclude(Exists(earlier_pending))
        .order_by("id")
        .values_list("pk", flat=True)[:limit]
    )
    if lost:
        pending.filter(pk__in=lost, lease_until__isnull=True).update(next_attempt_at=now)
    ids = resent + lost
    if ids:
        transaction.on_commit(lambda: _publish(ids), robust=True)
        logger.warning("callbacks: re-sent %d interrupted and %d lost deliveries", len(resent), len(lost))
    return len(ids)
