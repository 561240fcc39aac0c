-- Every statement that changes a job's queue_state: only jobs/engine/transitions.py runs them, each
-- after checking the move against the transition table of jobs/states.py.

-- job_move --
-- Moves jobs from one of the allowed states to the target; returns the ids it moved.
UPDATE jobs_job SET queue_state = %(target)s, updated_at = %(now)s
WHERE id = ANY(%(ids)s) AND queue_state = ANY(%(allowed)s)
RETURNING id

-- job_start --
-- Moves jobs to started, noting when (a resumed job's earlier end is cleared); returns the ids it moved.
UPDATE jobs_job SET queue_state = <JobState.STARTED>, started_at = %(now)s, finished_at = NULL,
    updated_at = %(now)s
WHERE id = ANY(%(ids)s) AND queue_state = ANY(%(allowed)s)
RETURNING id

-- job_start_defined --
-- job_start, also storing the definition each job starts with (parallel arrays of ids and JSON texts, NULL keeping the job's own): a first start writes the row once; returns the ids it moved.
UPDATE jobs_job AS j SET queue_state = <JobState.STARTED>, started_at = %(now)s, finished_at = NULL,
    updated_at = %(now)s, definition = coalesce(v.definition::jsonb, j.definition)
FROM unnest(%(ids)s::bigint[], %(definitions)s::text[]) AS v(id, definition)
WHERE j.id = v.id AND j.queue_state = ANY(%(allowed)s)
RETURNING j.id

-- job_end --
-- Ends jobs as completed, failed or not, with their message; returns the ids it moved.
UPDATE jobs_job SET queue_state = <JobState.COMPLETED>, failed = %(failed)s, message = %(message)s,
    finished_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(ids)s) AND queue_state = ANY(%(allowed)s)
RETURNING id

-- job_break --
-- Breaks jobs (an operator's choice, or a rerun's original), noting when; returns the ids it moved.
UPDATE jobs_job SET queue_state = <JobState.BROKEN>, finished_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(ids)s) AND queue_state = ANY(%(allowed)s)
RETURNING id

-- step_end --
-- Records a completed step and moves its job on in one round trip: claims or queues the next step, or ends the job, with their log entries in order.
-- The job row is locked first, as every writer does (a pause or break then waits for this statement;
-- the task rows are only touched once ``job`` has been read). Only while the job is started and every
-- earlier step is completed (``movable``): the next step (position + 1, pending) is claimed for this
-- worker when it runs on ``hold`` (a chain), else marked queued for the broker; with no step after this
-- one the job ends completed. Log entries are one INSERT in their order: the completion, the next
-- step's start (with the common-definitions notice, as start_task writes it), the job's end (under this,
-- its last step's id, as the reference shows it). In any
-- other case (an earlier step not completed, the next one not pending) nothing moves here and the
-- controller decides. A step whose attempt no longer owns the task (presumed dead and re-run, or its
-- claim lost in a crash and made again: the number may repeat, hence ``started``, the claim's time)
-- records nothing: the statement returns no row.
WITH job AS (
    SELECT j.id, j.queue_state, j.definition ->> 'source' AS source FROM jobs_job AS j
    WHERE j.id = %(job)s FOR UPDATE
),
done AS (
    UPDATE jobs_task AS t SET state = <TaskState.COMPLETED>, result = %(result)s::jsonb,
        progress = 100.0, finished_at = %(now)s, updated_at = %(now)s
    FROM job
    WHERE t.id = %(task)s AND t.job_id = job.id AND t.state = <TaskState.RUNNING>
      AND t.attempts = %(attempt)s AND t.started_at = %(started)s
    RETURNING t.id, t.job_id, t.position, job.queue_state, job.source,
        job.queue_state = <JobState.STARTED> AND NOT EXISTS (
            SELECT 1 FROM jobs_task AS e
            WHERE e.job_id = t.job_id AND e.position < t.position AND e.state <> <TaskState.COMPLETED>
        ) AS movable,
        NOT EXISTS (
            SELECT 1 FROM jobs_task AS l WHERE l.job_id = t.job_id AND l.position > t.position
        ) AS last
),
nxt AS (
    UPDATE jobs_task AS t SET
        state = CASE WHEN t.queue = %(hold)s THEN <TaskState.RUNNING> ELSE <TaskState.QUEUED> END,
        attempts = CASE WHEN t.queue = %(hold)s THEN t.attempts + 1 ELSE t.attempts END,
        worker = CASE WHEN t.queue = %(hold)s THEN %(worker)s ELSE t.worker END,
        heartbeat_at = CASE WHEN t.queue = %(hold)s THEN %(now)s ELSE t.heartbeat_at END,
        started_at = CASE WHEN t.queue = %(hold)s THEN %(now)s ELSE t.started_at END,
        next_attempt_at = CASE WHEN t.queue = %(hold)s THEN NULL ELSE t.next_attempt_at END,
        updated_at = %(now)s
    FROM done AS d
    WHERE d.movable AND t.job_id = d.job_id AND t.position = d.position + 1
      AND t.state = <TaskState.PENDING>
    RETURNING t.id, t.job_id, t.state, t.attempts, t.name, t.position, t.queue, t.parameters
),
ended AS (
    UPDATE jobs_job AS j SET queue_state = <JobState.COMPLETED>, failed = false, finished_at = %(now)s,
        message = %(end_message)s, updated_at = %(now)s
    FROM done AS d
    WHERE j.id = d.job_id AND d.movable AND d.last AND j.queue_state = <JobState.STARTED>
    RETURNING j.id
),
logged AS (
    INSERT INTO logs_logentry (job_id, task_id, severity, progname, message, visible, created_at, updated_at)
    SELECT e.job_id, e.task_id, <Severity.INFO>, e.progname, e.message, true, %(now)s, %(now)s FROM (
        SELECT 1 AS ord, d.job_id, d.id AS task_id, %(progname)s AS progname, %(message)s AS message
        FROM done AS d
        UNION ALL
        SELECT 2, n.job_id, n.id, %(progname)s, %(notice)s FROM nxt AS n CROSS JOIN done AS d
        WHERE n.state = <TaskState.RUNNING> AND d.source = 'common'
        UNION ALL
        SELECT 3, n.job_id, n.id, %(progname)s, format('Task ''%%s'' started', n.name) FROM nxt AS n
        WHERE n.state = <TaskState.RUNNING>
        UNION ALL
        SELECT 4, x.id, d.id, %(controller)s, %(end_message)s FROM ended AS x CROSS JOIN done AS d
    ) AS e ORDER BY e.ord
)
SELECT d.queue_state, EXISTS (SELECT 1 FROM ended), n.id, n.state, n.attempts, n.name,
    n.position, n.queue, n.parameters
FROM done AS d LEFT JOIN nxt AS n ON true
