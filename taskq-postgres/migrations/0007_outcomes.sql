-- Outcomes, version 7 (taskq_core::Outcome): how recent runs ended, per queue, and per-task
-- counters by minute, written by the statements that settle the messages (ack, retry,
-- dead_letter), so that operators can search recent tasks and read per-task numbers.

-- Recent outcomes, newest = highest seq: one row per settle call and queue, a bundle of
-- `outcomes` (taskq_core::bundle); about `p_kept` outcomes per queue (trimmed now and then).
CREATE TABLE @s.outcomes (
    seq bigserial PRIMARY KEY,
    queue text NOT NULL,
    outcomes integer NOT NULL,
    bundle text NOT NULL
);
CREATE INDEX outcomes_queue ON @s.outcomes (queue, seq);

-- Counters by queue, minute and field (taskq_core::tally's `<task> SUCCESS`, `<task> rt <b>`).
CREATE TABLE @s.task_counts (
    queue text NOT NULL,
    minute bigint NOT NULL,
    field text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (queue, minute, field)
);

-- Appends the bundles (p_bundles of p_queues, with p_sizes outcomes each), adds the counters
-- (p_fields of p_counted queues by p_counts) to this minute. A queue's record is trimmed to
-- its p_kept newest outcomes with a chance of one in 256 per outcome written, so that a busy
-- queue pays for the trim's index walk about once per 256 outcomes rather than on every
-- settle, and holds at most a few hundred over the cap between trims. Returns the outcomes written.
CREATE FUNCTION @s.record_outcomes(
    p_queues text[], p_sizes integer[], p_bundles text[], p_counted text[], p_fields text[],
    p_counts bigint[], p_kept integer
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    q record;
BEGIN
    IF cardinality(p_bundles) = 0 THEN
        RETURN 0;
    END IF;
    INSERT INTO @s.outcomes (queue, outcomes, bundle)
    SELECT * FROM unnest(p_queues, p_sizes, p_bundles);
    INSERT INTO @s.task_counts (queue, minute, field, count)
    SELECT t.q, @s.minute_now(), t.f, t.c FROM unnest(p_counted, p_fields, p_counts) AS t(q, f, c)
    ON CONFLICT (queue, minute, field) DO UPDATE SET count = @s.task_counts.count + EXCLUDED.count;
    FOR q IN SELECT x.name, x.size FROM unnest(p_queues, p_sizes) AS x(name, size) LOOP
        IF random() * 256 < q.size THEN
            -- Every bundle from the one that would take the record past p_kept outcomes on
            -- (whole bundles go, as on Redis: what is left holds at most p_kept).
            DELETE FROM @s.outcomes
            WHERE queue = q.name AND seq <= (
                SELECT seq FROM (
                    SELECT seq, sum(outcomes) OVER (ORDER BY seq DESC) AS newer
                    FROM @s.outcomes WHERE queue = q.name
                ) o WHERE newer > p_kept ORDER BY seq DESC LIMIT 1);
            DELETE FROM @s.task_counts
            WHERE queue = q.name AND minute <= @s.minute_now() - 120;
        END IF;
    END LOOP;
    RETURN (SELECT sum(x) FROM unnest(p_sizes) x);
END
$$;
