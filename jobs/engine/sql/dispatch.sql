-- The dispatcher's reads (jobs/engine/dispatcher.py): each runs in its transaction, after the lock.

-- dispatch_lock --
-- Takes the dispatchers' advisory lock for this transaction if it is free; true when taken.
SELECT pg_try_advisory_xact_lock(%(key)s)

-- dispatch_state --
-- The stored slot settings (name to text) and the started jobs counted per priority, read once the lock is held.
SELECT
    (SELECT coalesce(jsonb_object_agg(s.name, s.value), '{}'::jsonb)
        FROM settings_app_setting AS s WHERE s.name = ANY(%(names)s)),
    (SELECT coalesce(jsonb_object_agg(c.priority, c.jobs), '{}'::jsonb)
        FROM (SELECT priority, count(*) AS jobs FROM jobs_job
            WHERE queue_state = <JobState.STARTED> GROUP BY priority) AS c)

-- dispatch_candidates --
-- The next queued jobs in dispatch order (the index job_dispatch_order), at most %(limit)s: id and priority.
SELECT id, priority FROM jobs_job WHERE queue_state = <JobState.QUEUED>
ORDER BY top_of_queue DESC, priority, position, created_at, id LIMIT %(limit)s

-- dispatch_priority_candidates --
-- The same for priority jobs only (priority at most %(threshold)s), when only reserved slots are free.
SELECT id, priority FROM jobs_job WHERE queue_state = <JobState.QUEUED> AND priority <= %(threshold)s
ORDER BY top_of_queue DESC, priority, position, created_at, id LIMIT %(limit)s
