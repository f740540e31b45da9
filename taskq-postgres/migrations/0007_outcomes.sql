-- Outcomes, version 7 (taskq_core::Outcome): how recent runs ended, per queue, and per-task
-- counters by minute, written by the statements that settle the messages (ack, retry,
-- dead_letter), so that operators can search recent tasks and read per-task numbers.

-- Recent outcomes, newest = highest seq; about `p_kept` per queue (trimmed now and then).
CREATE TABLE @s.outcomes (
    seq bigserial PRIMARY KEY,
    queue text NOT NULL,
    outcome text NOT NULL
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

-- Appends p_outcomes (each of the queue at the same place in p_queues), adds the counters
-- (p_fields of p_counted queues by p_counts) to this minute. A queue's record is trimmed to
-- its p_kept newest rows with a chance of one in 256 per row written, so that a busy queue
-- pays for the trim's index walk about once per 256 rows rather than on every settle, and
-- holds at most a few hundred rows over the cap. Returns the rows written.
CREATE FUNCTION @s.record_outcomes(
    p_queues text[], p_outcomes text[], p_counted text[], p_fields text[], p_counts bigint[],
    p_kept integer
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    q record;
BEGIN
    IF cardinality(p_outcomes) = 0 THEN
        RETURN 0;
    END IF;
    INSERT INTO @s.outcomes (queue, outcome) SELECT * FROM unnest(p_queues, p_outcomes);
    INSERT INTO @s.task_counts (queue, minute, field, count)
    SELECT t.q, @s.minute_now(), t.f, t.c FROM unnest(p_counted, p_fields, p_counts) AS t(q, f, c)
    ON CONFLICT (queue, minute, field) DO UPDATE SET count = @s.task_counts.count + EXCLUDED.count;
    FOR q IN SELECT x AS name, count(*) AS written FROM unnest(p_queues) x GROUP BY x LOOP
        IF random() * 256 < q.written THEN
            DELETE FROM @s.outcomes
            WHERE queue = q.name AND seq < (
                SELECT seq FROM @s.outcomes WHERE queue = q.name
                ORDER BY seq DESC OFFSET p_kept - 1 LIMIT 1);
            DELETE FROM @s.task_counts
            WHERE queue = q.name AND minute <= @s.minute_now() - 120;
        END IF;
    END LOOP;
    RETURN cardinality(p_outcomes);
END
$$;
