"""GET /jobs at a million jobs: a partial index for failed jobs per client, and an exact bound on how far
``created_at`` can run against ``id``, so a ``from``/``to`` window becomes a range of ids.

Ids come from a sequence at INSERT; ``created_at`` is set by the application just before (auto_now_add),
so concurrent inserts can commit their ids slightly out of ``created_at`` order. ``jobs_job_created_skew()``
returns an interval S such that for any two jobs i < j (ids), ``created_at(i) - created_at(j) <= S``, or
NULL when no such bound is known. With it, every job created at or before T has an id below that of any
job created after T + S, and every job created at or after F has an id above that of any job created
before F - S (jobs.filters.JobFilter adds those bounds; the created_at filters stay, so the rows are the
same). Why S holds, with n(x) the moment job x drew its id from the sequence (i < j => n(i) < n(j)):

- each insert records ``stale`` = clock_timestamp() - created_at (>= n - created_at: the BEFORE trigger
  runs after the id was drawn) and ``ahead`` = created_at - statement_timestamp() (>= created_at - n);
  so created_at(i) - created_at(j) <= ahead(i) + stale(j) <= max ahead + max stale;
- ``jobs_job_created_skew_recompute()`` (after a bulk load) replaces the records by the exact largest
  inversion among the existing jobs (``exact``) and their largest created_at ahead of the clock (``ahead``),
  taken under a SHARE lock so no insert runs meanwhile; later jobs are covered by the bullet above;
- an UPDATE of ``created_at`` or ``id``, or an insert whose id did not come from the sequence in this
  statement, records ``unbounded`` (S = NULL: no id bounds) until the next recompute;
- a TRUNCATE of jobs_job empties the records (no jobs, no inversion).

Records are appended only when they exceed the current maximum of their kind (a handful of rows).
Reading S in the same statement as the jobs (a STABLE function, the statement's snapshot) means every
job the statement sees has its record seen too. It assumes the database clock does not step backwards.
"""

from django.db import migrations, models

CREATE = """
CREATE TABLE jobs_job_created_skew (
    kind text NOT NULL CHECK (kind IN ('stale', 'ahead', 'exact', 'unbounded')),
    seconds double precision
);

CREATE FUNCTION jobs_job_created_skew() RETURNS interval LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN bool_or(kind = 'unbounded') THEN NULL ELSE make_interval(secs => greatest(
        coalesce(max(seconds) FILTER (WHERE kind = 'exact'), 0),
        coalesce(max(seconds) FILTER (WHERE kind = 'stale'), 0)
            + coalesce(max(seconds) FILTER (WHERE kind = 'ahead'), 0)
    )) END
    FROM jobs_job_created_skew
$$;

CREATE FUNCTION jobs_job_created_skew_note(note_kind text, note_seconds double precision)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF note_kind = 'unbounded' THEN
        IF NOT EXISTS (SELECT 1 FROM jobs_job_created_skew WHERE kind = 'unbounded') THEN
            INSERT INTO jobs_job_created_skew VALUES ('unbounded', NULL);
        END IF;
    -- Beyond 30 years the timestamp arithmetic of the bounds could leave the valid range: no bound.
    ELSIF note_seconds > 946080000 THEN
        PERFORM jobs_job_created_skew_note('unbounded', NULL);
    ELSIF note_seconds > coalesce(
        (SELECT max(seconds) FROM jobs_job_created_skew WHERE kind = note_kind), 0
    ) THEN
        INSERT INTO jobs_job_created_skew VALUES (note_kind, note_seconds);
    END IF;
END
$$;

CREATE FUNCTION jobs_job_created_skew_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    drawn bigint;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.created_at IS DISTINCT FROM OLD.created_at OR NEW.id IS DISTINCT FROM OLD.id THEN
            PERFORM jobs_job_created_skew_note('unbounded', NULL);
        END IF;
        RETURN NEW;
    END IF;
    BEGIN
        drawn := currval(pg_get_serial_sequence('jobs_job', 'id'));
    EXCEPTION WHEN object_not_in_prerequisite_state THEN  -- no id drawn in this session
        drawn := NULL;
    END;
    IF drawn IS DISTINCT FROM NEW.id THEN
        PERFORM jobs_job_created_skew_note('unbounded', NULL);
    ELSE
        PERFORM jobs_job_created_skew_note('stale', extract(epoch FROM clock_timestamp() - NEW.created_at));
        PERFORM jobs_job_created_skew_note('ahead', extract(epoch FROM NEW.created_at - statement_timestamp()));
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_job_created_skew_row
BEFORE INSERT OR UPDATE OF created_at, id ON jobs_job
FOR EACH ROW EXECUTE FUNCTION jobs_job_created_skew_row();

CREATE FUNCTION jobs_job_created_skew_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE jobs_job_created_skew;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_job_created_skew_truncate
AFTER TRUNCATE ON jobs_job
FOR EACH STATEMENT EXECUTE FUNCTION jobs_job_created_skew_truncate();

CREATE FUNCTION jobs_job_created_skew_recompute() RETURNS interval LANGUAGE plpgsql AS $$
DECLARE
    inversion double precision;
    ahead double precision;
BEGIN
    LOCK TABLE jobs_job IN SHARE MODE;
    SELECT max(extract(epoch FROM earlier_max - created_at)) INTO inversion FROM (
        SELECT created_at, max(created_at) OVER (
            ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS earlier_max
        FROM jobs_job
    ) AS ordered;
    SELECT extract(epoch FROM max(created_at) - clock_timestamp()) INTO ahead FROM jobs_job;
    DELETE FROM jobs_job_created_skew;
    PERFORM jobs_job_created_skew_note('exact', greatest(coalesce(inversion, 0), 0));
    PERFORM jobs_job_created_skew_note('ahead', greatest(coalesce(ahead, 0), 0));
    RETURN jobs_job_created_skew();
END
$$;

SELECT jobs_job_created_skew_recompute();
"""

DROP = """
DROP TRIGGER IF EXISTS jobs_job_created_skew_truncate ON jobs_job;
DROP TRIGGER IF EXISTS jobs_job_created_skew_row ON jobs_job;
DROP FUNCTION IF EXISTS jobs_job_created_skew_recompute();
DROP FUNCTION IF EXISTS jobs_job_created_skew_truncate();
DROP FUNCTION IF EXISTS jobs_job_created_skew_row();
DROP FUNCTION IF EXISTS jobs_job_created_skew_note(text, double precision);
DROP FUNCTION IF EXISTS jobs_job_created_skew();
DROP TABLE IF EXISTS jobs_job_created_skew;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("clients", "0002_webhook_secret_encrypted"),
        ("jobs", "0003_job_state_counts"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("failed", True), ("queue_state", 2)),
                fields=["client", "id"],
                name="job_failed_client_id",
            ),
        ),
        migrations.RunSQL(CREATE, DROP),
    ]
