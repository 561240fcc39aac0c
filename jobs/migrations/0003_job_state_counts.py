"""Jobs per (queue_state, failed), maintained by triggers, so GET /health never counts a million rows.

Every insert, delete, or change of ``queue_state``/``failed`` of a job appends a delta row (+1/-1) to
``jobs_job_state_count`` inside the same statement; nothing is ever updated in place, so concurrent
transitions never wait on each other. ``jobs.selectors.job_counts`` sums the deltas; the reconciler and
the clean-up fold them into one row per key (``jobs.engine.counts.job_counts_compact``). A TRUNCATE of jobs_job
empties the table too.
"""

from django.db import migrations

CREATE = """
CREATE TABLE jobs_job_state_count (
    queue_state smallint NOT NULL,
    failed boolean NOT NULL,
    n bigint NOT NULL
);

CREATE FUNCTION jobs_job_state_count_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO jobs_job_state_count VALUES (NEW.queue_state, NEW.failed, 1);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO jobs_job_state_count VALUES (OLD.queue_state, OLD.failed, -1);
    ELSIF NEW.queue_state IS DISTINCT FROM OLD.queue_state OR NEW.failed IS DISTINCT FROM OLD.failed THEN
        INSERT INTO jobs_job_state_count VALUES (OLD.queue_state, OLD.failed, -1), (NEW.queue_state, NEW.failed, 1);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_job_state_count_row
AFTER INSERT OR DELETE OR UPDATE OF queue_state, failed ON jobs_job
FOR EACH ROW EXECUTE FUNCTION jobs_job_state_count_row();

CREATE FUNCTION jobs_job_state_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE jobs_job_state_count;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_job_state_count_truncate
AFTER TRUNCATE ON jobs_job
FOR EACH STATEMENT EXECUTE FUNCTION jobs_job_state_count_truncate();

LOCK TABLE jobs_job IN SHARE MODE;
INSERT INTO jobs_job_state_count SELECT queue_state, failed, count(*) FROM jobs_job GROUP BY 1, 2;
"""

DROP = """
DROP TRIGGER IF EXISTS jobs_job_state_count_truncate ON jobs_job;
DROP TRIGGER IF EXISTS jobs_job_state_count_row ON jobs_job;
DROP FUNCTION IF EXISTS jobs_job_state_count_truncate();
DROP FUNCTION IF EXISTS jobs_job_state_count_row();
DROP TABLE IF EXISTS jobs_job_state_count;
"""


class Migration(migrations.Migration):
    dependencies = [("jobs", "0002_search_and_order_indexes")]

    operations = [migrations.RunSQL(CREATE, DROP)]
