-- Statements of one step's attempt, run by its worker (jobs/engine/runner.py).

-- claim_task --
-- Claims a task for one attempt (queued, retrying and due, or running with a stale heartbeat, of a started job) and reads what its step needs.
UPDATE jobs_task AS t
SET state = <TaskState.RUNNING>, attempts = t.attempts + 1, worker = %(worker)s, heartbeat_at = %(now)s,
    started_at = %(now)s, next_attempt_at = NULL, updated_at = %(now)s
FROM jobs_job AS j
JOIN clients_client AS c ON c.id = j.client_id
WHERE t.id = %(task)s AND j.id = t.job_id AND j.queue_state = <JobState.STARTED>
  AND (t.state = <TaskState.QUEUED>
       OR (t.state = <TaskState.RETRYING> AND t.next_attempt_at <= %(now)s)
       OR (t.state = <TaskState.RUNNING> AND t.heartbeat_at < %(stale)s))
RETURNING t.attempts, t.job_id, t.name, t.position, t.queue, t.parameters AS step_parameters,
          j.parameters AS job_parameters, j.workflow, j.definition ->> 'source' AS source,
          c.name AS client_name,
          (SELECT json_object_agg(e.name, e.result ORDER BY e.position) FROM jobs_task AS e
           WHERE e.job_id = t.job_id AND e.position < t.position AND e.state = <TaskState.COMPLETED>)
           AS earlier

-- start_task --
-- claim_task, and the start's log entries (the common-definitions notice first, as job_log would write them) in the same round trip.
WITH claimed AS (<<claim_task>>),
logged AS (
    INSERT INTO logs_logentry (job_id, task_id, severity, progname, message, visible, created_at, updated_at)
    SELECT c.job_id, %(task)s, <Severity.INFO>, %(progname)s, m.message, true, %(now)s, %(now)s
    FROM claimed AS c
    CROSS JOIN LATERAL (VALUES (1, %(notice)s), (2, format('Task ''%%s'' started', c.name)))
        AS m(ord, message)
    WHERE m.ord = 2 OR c.source = 'common'
    ORDER BY m.ord
)
SELECT * FROM claimed
