-- Statements of one callback delivery's attempt, run on the control process's threads
-- (callbacks/services.py). Parameters %(pending)s, %(state)s are CallbackDelivery.State ids.

-- claim_delivery --
-- Claims a due pending delivery that is first in its (job, URL) line for one attempt, and reads what sending it needs (the job's workflow id, the client's stored webhook secret, whether this is the job's first callback attempt and whether the client has its own definitions).
UPDATE scheduling_callbackdelivery AS d
SET lease_until = %(lease_until)s, claimed_at = %(now)s, attempts = d.attempts + 1
FROM jobs_job AS j
JOIN clients_client AS c ON c.id = j.client_id
WHERE d.id = %(id)s AND j.id = d.job_id AND d.state = %(pending)s
  AND (d.lease_until IS NULL OR d.lease_until < %(now)s)
  AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= %(due_by)s)
  -- FOR SHARE: an earlier delivery whose outcome is being recorded right now is waited for and seen
  -- done, or this claim (skipped) commits before that record's next_in_line looks for this delivery.
  AND NOT EXISTS (SELECT 1 FROM scheduling_callbackdelivery AS e
                  WHERE e.job_id = d.job_id AND e.url = d.url AND e.id < d.id AND e.state = %(pending)s
                  FOR SHARE)
RETURNING d.id, d.job_id, d.task_id, d.kind, d.event, d.url, d.body, d.webhook_id, d.attempts,
          j.workflow_uuid, c.name AS client_name, c.webhook_secret,
          d.attempts = 1 AND NOT EXISTS (SELECT 1 FROM scheduling_callbackdelivery AS f
                                         WHERE f.job_id = d.job_id AND f.id < d.id) AS first_of_job,
          d.attempts = 1 AND EXISTS (SELECT 1 FROM jobs_workflowdefinition AS w
                                     WHERE w.client_id = j.client_id AND w.name = j.workflow) AS own_definitions

-- record_attempt --
-- Records a claimed attempt's outcome (fenced by its claim) and its log lines, in order, in one round trip. Returns whether the claim still held.
WITH done AS (
    UPDATE scheduling_callbackdelivery
    SET state = %(state)s, lease_until = NULL, claimed_at = NULL, last_status = %(status)s,
        last_error = %(error)s, sent_at = %(sent_at)s,
        next_attempt_at = COALESCE(%(next_attempt_at)s, next_attempt_at)
    WHERE id = %(id)s AND claimed_at = %(claimed_at)s
    RETURNING job_id
),
logged AS (
    INSERT INTO logs_logentry (job_id, task_id, severity, progname, message, visible, created_at, updated_at)
    SELECT done.job_id, %(task_id)s, line.severity, %(progname)s, line.message, true, %(now)s, %(now)s
    FROM done
    CROSS JOIN unnest(%(messages)s::text[], %(severities)s::int[]) WITH ORDINALITY AS line(message, severity, n)
    ORDER BY line.n
)
SELECT count(*) AS recorded FROM done

-- next_in_line --
-- Marks the next pending delivery of a done delivery's (job, URL) line due now and returns its id. Run after record_attempt in the same transaction, as a statement of its own: its snapshot then sees every delivery whose claim found this one pending (the claim waits on this row's lock until the commit, then sees it done).
UPDATE scheduling_callbackdelivery SET next_attempt_at = %(now)s
WHERE id = (
    SELECT d.id FROM scheduling_callbackdelivery AS d
    WHERE d.job_id = %(job_id)s AND d.url = %(url)s AND d.id > %(id)s AND d.state = %(pending)s
    ORDER BY d.id LIMIT 1)
RETURNING id
