"""The listing bounds' row trigger (0004) no longer asks to note a figure that is not positive.

Every note it asks for was a call of ``jobs_job_created_skew_note``, which looks up the largest note of
its kind and records the figure only when it is larger. Every recorded figure is positive (a note must
beat ``coalesce(max, 0)``; the recompute records ``greatest(…, 0)``), so a figure of zero or less is never
recorded: asking for it was a function call and an index lookup for nothing. The ``ahead`` figure
(``created_at`` after the statement's start) is negative for every job the application inserts, whose
``created_at`` is read before the statement is sent: the trigger cost 80 µs of the 315 µs a submission's
insert costs Postgres, and this is one of its two lookups (``python -m bench.row_cost``, bench/README.md).
The bounds are the same: what the function records is unchanged.
"""

from django.db import migrations

ROW = """
CREATE OR REPLACE FUNCTION jobs_job_created_skew_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    drawn bigint;
    seconds double precision;
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
        -- A figure of zero or less is never recorded (every record is positive): not asked for.
        seconds := extract(epoch FROM clock_timestamp() - NEW.created_at);
        IF seconds > 0 THEN
            PERFORM jobs_job_created_skew_note('stale', seconds);
        END IF;
        seconds := extract(epoch FROM NEW.created_at - statement_timestamp());
        IF seconds > 0 THEN
            PERFORM jobs_job_created_skew_note('ahead', seconds);
        END IF;
    END IF;
    RETURN NEW;
END
$$;
"""

# 0004's definition.
PREVIOUS = """
CREATE OR REPLACE FUNCTION jobs_job_created_skew_row() RETURNS trigger LANGUAGE plpgsql AS $$
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
"""


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0007_created_skew_lookup"),
    ]

    # Replacing a function's body takes no lock a running release waits on.
    operations = [migrations.RunSQL(ROW, PREVIOUS)]
