-- Statements that create jobs and give them their tasks (jobs/services.py, jobs/engine/controller.py).

-- insert_job --
-- Inserts one new job and its creation log entry in one statement; returns the job's id, or no row when its idempotency key was taken meanwhile.
WITH j AS (
    INSERT INTO jobs_job (client_id, workflow, priority, position, top_of_queue, parameters, queue_state,
        failed, persist, run_at, semaphore_url, workflow_uuid, idempotency_key, definition, rerun_of_id,
        message, created_at, updated_at, started_at, finished_at)
    VALUES (%(client_id)s, %(workflow)s, %(priority)s, %(position)s, %(top_of_queue)s, %(parameters)s::jsonb,
        %(queue_state)s, %(failed)s, %(persist)s, %(run_at)s, %(semaphore_url)s, %(workflow_uuid)s,
        %(idempotency_key)s, %(definition)s::jsonb, %(rerun_of_id)s, %(message)s, %(created_at)s,
        %(updated_at)s, %(started_at)s, %(finished_at)s)
    ON CONFLICT (client_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, workflow_uuid
),
logged AS (
    INSERT INTO logs_logentry (job_id, task_id, severity, progname, message, visible, created_at, updated_at)
    SELECT j.id, %(entry_task_id)s, %(entry_severity)s, %(entry_progname)s, %(entry_message)s,
        %(entry_visible)s, %(entry_created_at)s, %(entry_updated_at)s
    FROM j
)
SELECT workflow_uuid, id FROM j

-- lock_starting_jobs --
-- Locks those of the jobs the dispatcher starts that are in %(state)s (queued, about to move; or started, just moved), tells which start for the first time (no definition, no tasks yet) and gives the steps of their client's own definition of their workflow, if any.
SELECT j.id, j.client_id, j.workflow,
    j.definition IS NULL AND NOT EXISTS (SELECT 1 FROM jobs_task AS t WHERE t.job_id = j.id),
    (SELECT w.steps FROM jobs_workflowdefinition AS w WHERE w.client_id = j.client_id AND w.name = j.workflow)
FROM jobs_job AS j WHERE j.id = ANY(%(ids)s) AND j.queue_state = %(state)s ORDER BY j.id FOR UPDATE OF j

-- write_definitions --
-- Stores each starting job's resolved workflow definition (parallel arrays of ids and JSON texts).
UPDATE jobs_job AS j SET definition = v.definition::jsonb, updated_at = %(now)s
FROM unnest(%(ids)s::bigint[], %(definitions)s::text[]) AS v(id, definition)
WHERE j.id = v.id

-- insert_tasks --
-- Inserts the task rows of starting jobs (parallel arrays, one element per task); returns each task's id, job, position and queue.
INSERT INTO jobs_task (job_id, position, name, queue, parameters, state, attempts, error, worker,
    created_at, updated_at)
SELECT v.job_id, v.position, v.name, v.queue, v.parameters::jsonb, v.state, 0, '', '', %(now)s, %(now)s
FROM unnest(%(job_ids)s::bigint[], %(positions)s::integer[], %(names)s::text[], %(queues)s::text[],
    %(parameters)s::text[], %(states)s::smallint[]) AS v(job_id, position, name, queue, parameters, state)
RETURNING id, job_id, position, queue

-- insert_jobs --
-- Inserts new jobs and their creation log entries in one statement (parallel arrays, one element per job); returns each job's workflow_uuid and id, leaving out a job whose idempotency key the client already used.
WITH j AS (
    INSERT INTO jobs_job (client_id, workflow, priority, position, top_of_queue, parameters, queue_state,
        failed, persist, run_at, semaphore_url, workflow_uuid, idempotency_key, definition, rerun_of_id,
        message, created_at, updated_at, started_at, finished_at)
    SELECT * FROM unnest(%(client_id)s::bigint[], %(workflow)s::text[], %(priority)s::smallint[],
        %(position)s::integer[], %(top_of_queue)s::boolean[], %(parameters)s::text[]::jsonb[],
        %(queue_state)s::smallint[], %(failed)s::boolean[], %(persist)s::boolean[],
        %(run_at)s::timestamptz[], %(semaphore_url)s::text[], %(workflow_uuid)s::uuid[],
        %(idempotency_key)s::text[], %(definition)s::text[]::jsonb[], %(rerun_of_id)s::bigint[],
        %(message)s::text[], %(created_at)s::timestamptz[], %(updated_at)s::timestamptz[],
        %(started_at)s::timestamptz[], %(finished_at)s::timestamptz[])
    ON CONFLICT (client_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, workflow_uuid
),
logged AS (
    INSERT INTO logs_logentry (job_id, task_id, severity, progname, message, visible, created_at, updated_at)
    SELECT j.id, e.task_id, e.severity, e.progname, e.message, e.visible, e.created_at, e.updated_at
    FROM j JOIN unnest(%(workflow_uuid)s::uuid[], %(entry_task_id)s::bigint[], %(entry_severity)s::smallint[],
        %(entry_progname)s::text[], %(entry_message)s::text[], %(entry_visible)s::boolean[],
        %(entry_created_at)s::timestamptz[], %(entry_updated_at)s::timestamptz[])
        AS e(workflow_uuid, task_id, severity, progname, message, visible, created_at, updated_at)
        ON e.workflow_uuid = j.workflow_uuid
    ORDER BY j.id
)
SELECT workflow_uuid, id FROM j

-- queued_job_exists --
-- Whether a job is queued: read by a job's end after its commit, which asks for a dispatch only then.
SELECT EXISTS (SELECT 1 FROM jobs_job WHERE queue_state = <JobState.QUEUED>)
