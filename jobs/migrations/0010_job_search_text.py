"""``GET /jobs?search=`` reads a table of its own, ``jobs_job_search``: each job's parameters as JSON text,
written once when the job is inserted, with the trigram index on it.

The trigram index was on ``jobs_job``, and every change of a job's state (an indexed column, so never a
HOT update) wrote a new version of the row with new entries in every index, the parameters' trigrams
among them, although the parameters never change: with a media job's 0.9 kB of parameters, 84 % of the
WAL of its two state changes (``python -m bench.row_cost --media-parameters``, bench/README.md, issue 16,
seventh pass, item 22: a job row's WAL 25.1 -> 13.2 kB).

Triggers keep the table in step with ``jobs_job`` whatever writes it (the engine's insert, the ORM, a
bulk load): a statement's inserted jobs are copied in one INSERT (a transition table), a changed
``parameters`` is copied again, deleted jobs take their text with them, and a TRUNCATE empties both.
There is no foreign key: the delete trigger does its work, and the engine's insert needs no check.

The table is filled for the jobs already there after the triggers exist (creating one waits for the
inserts in flight, and every later insert copies its own jobs; the fill skips those); the trigram index
is built ``CONCURRENTLY`` after it and only then is ``job_parameters_trgm`` dropped (``CONCURRENTLY``
too). While the previous release
still runs during a deploy, its searches read ``jobs_job`` without that index: the same rows, found by
walking the jobs instead of through the index.
"""

from django.db import migrations, models

CREATE = """
CREATE TABLE jobs_job_search (job_id bigint PRIMARY KEY, text text NOT NULL);

CREATE FUNCTION jobs_job_search_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobs_job_search (job_id, text) SELECT id, parameters::text FROM added;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_job_search_added AFTER INSERT ON jobs_job REFERENCING NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION jobs_job_search_added();

CREATE FUNCTION jobs_job_search_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobs_job_search (job_id, text) VALUES (NEW.id, NEW.parameters::text)
    ON CONFLICT (job_id) DO UPDATE SET text = EXCLUDED.text;
    IF NEW.id <> OLD.id THEN
        DELETE FROM jobs_job_search WHERE job_id = OLD.id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_job_search_changed AFTER UPDATE OF parameters, id ON jobs_job
FOR EACH ROW WHEN (OLD.parameters IS DISTINCT FROM NEW.parameters OR OLD.id <> NEW.id)
EXECUTE FUNCTION jobs_job_search_changed();

CREATE FUNCTION jobs_job_search_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM jobs_job_search AS s USING removed AS r WHERE s.job_id = r.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_job_search_removed AFTER DELETE ON jobs_job REFERENCING OLD TABLE AS removed
FOR EACH STATEMENT EXECUTE FUNCTION jobs_job_search_removed();

CREATE FUNCTION jobs_job_search_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE jobs_job_search;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_job_search_truncated AFTER TRUNCATE ON jobs_job
FOR EACH STATEMENT EXECUTE FUNCTION jobs_job_search_truncated();
"""

# The jobs already there (after the triggers: those inserted since copied themselves).
FILL = (
    "INSERT INTO jobs_job_search (job_id, text) SELECT id, parameters::text FROM jobs_job"
    " ON CONFLICT (job_id) DO NOTHING"
)

DROP = """
DROP TRIGGER IF EXISTS jobs_job_search_truncated ON jobs_job;
DROP TRIGGER IF EXISTS jobs_job_search_removed ON jobs_job;
DROP TRIGGER IF EXISTS jobs_job_search_changed ON jobs_job;
DROP TRIGGER IF EXISTS jobs_job_search_added ON jobs_job;
DROP FUNCTION IF EXISTS jobs_job_search_truncated();
DROP FUNCTION IF EXISTS jobs_job_search_removed();
DROP FUNCTION IF EXISTS jobs_job_search_changed();
DROP FUNCTION IF EXISTS jobs_job_search_added();
DROP TABLE IF EXISTS jobs_job_search;
"""


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("jobs", "0009_rerun_of_partial_index")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="JobSearchText",
                    fields=[
                        ("job_id", models.BigIntegerField(primary_key=True, serialize=False)),
                        ("text", models.TextField()),
                    ],
                    options={"db_table": "jobs_job_search", "managed": False},
                ),
            ],
            database_operations=[
                migrations.RunSQL(CREATE, DROP),
                migrations.RunSQL(FILL, migrations.RunSQL.noop),
            ],
        ),
        migrations.RunSQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS job_search_text_trgm ON jobs_job_search"
            " USING gin ((upper(text)) gin_trgm_ops)",
            "DROP INDEX CONCURRENTLY IF EXISTS job_search_text_trgm",
        ),
        migrations.RunSQL(
            "DROP INDEX CONCURRENTLY IF EXISTS job_parameters_trgm",
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS job_parameters_trgm ON jobs_job"
            " USING gin ((upper((parameters)::text)) gin_trgm_ops)",
        ),
    ]
