-- Statements of one step's attempt, run by its worker (jobs/engine/runner.py).

-- claim_task --
-- Claims a task for one attempt (queued, retrying and due, or running with a stale heartbeat, of a started job; with ``quiet_only``, only of a job that cannot call back) and reads what its step needs.
UPDATE jobs_task AS t
SET state = <TaskState.RUNNING>, attempts = t.attempts + 1, worker = %(worker)s, heartbeat_at = %(now)s,
    started_at = %(now)s, next_attempt_at = NULL, updated_at = %(now)s
FROM jobs_job AS j
JOIN clients_client AS c ON c.id = j.client_id
WHERE t.id = %(task)s AND j.id = t.job_id AND j.queue_state = <JobState.STARTED>
  AND (t.state = <TaskState.QUEUED>
       OR (t.state = <TaskState.RETRYING> AND t.next_attempt_at <= %(now)s)
       OR (t.state = <TaskState.RUNNING> AND t.heartbeat_at < %(stale)s))
  AND (NOT %(quiet_only)s OR <<cannot_call_back>>)
RETURNING t.attempts, t.job_id, t.name, t.position, t.queue, t.parameters AS step_parameters,
          j.parameters AS job_parameters, j.workflow, j.definition ->> 'source' AS source,
          c.name AS client_name,
          (SELECT json_object_agg(e.name, e.result ORDER BY e.position) FROM jobs_task AS e
           WHERE e.job_id = t.job_id AND e.position < t.position AND e.state = <TaskState.COMPLETED>)
           AS earlier

-- start_task --
-- claim_task, and the start's log entries (the common-definitions notice first, as job_log would write them) in the same round trip.
WITH claimed AS (<<claim_task>>),
logged AS (<<start_logs>>)
SELECT * FROM claimed

-- start_logs --
-- Not a statement: the part of start_task and start_task_quiet that writes the start's log entries of the task in ``claimed``.
INSERT INTO logs_logentry (job_id, task_id, severity, progname, message, visible, created_at, updated_at)
SELECT c.job_id, %(task)s, <Severity.INFO>, %(progname)s, m.message, true, %(now)s, %(now)s
FROM claimed AS c
CROSS JOIN LATERAL (VALUES (1, %(notice)s), (2, format('Task ''%%s'' started', c.name)))
    AS m(ord, message)
WHERE m.ord = 2 OR c.source = 'common'
ORDER BY m.ord

-- cannot_call_back --
-- Not a statement: a condition, true when the job ``j`` certainly names no callback URL (notify.may_call_back is false; it decides any case this leaves).
j.parameters IS NULL OR j.parameters = 'null'::jsonb
    OR (jsonb_typeof(j.parameters) = 'object'
        AND coalesce(j.parameters -> 'rest_endpoints', 'null'::jsonb) IN ('null', 'false', '0', '""', '[]', '{}'))

-- start_task_quiet --
-- start_task for a job that cannot call back, in one autocommit round trip whose commit may be asynchronous (``async``); a job that may call back is not claimed and comes back as one row with quiet = false.
-- Why such a claim need not wait for its WAL flush (bench/README.md, "One-step jobs"): a claim lost in a
-- Postgres crash leaves the task as it was (queued, the attempt not counted, the start's log lines
-- unwritten) and the reconciler publishes it again, as after a killed worker: the step may run again,
-- as steps may already. Any later commit (the step's end, a heartbeat, anyone's) flushes the WAL up to
-- and past this one, so the claim is durable before anything recorded after it. A job with callback URLs
-- records its start callback with its claim, and a callback is sent once that commits, so its claim stays
-- durable: start_task, in a transaction. ``async`` is false inside a caller's transaction, whose commit
-- this must not weaken; ``set_config(…, true)`` lasts until this statement's own transaction ends.
WITH claimed AS (<<claim_task>>),
logged AS (<<start_logs>>)
SELECT true AS quiet, c.*,
    set_config('synchronous_commit',
        CASE WHEN %(async)s THEN 'off' ELSE current_setting('synchronous_commit') END, true)
FROM claimed AS c
UNION ALL
SELECT false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM jobs_task AS t JOIN jobs_job AS j ON j.id = t.job_id
WHERE t.id = %(task)s AND NOT (<<cannot_call_back>>)
