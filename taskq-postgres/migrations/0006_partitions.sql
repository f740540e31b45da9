-- Partitions, version 6 (docs/partitions.md): a queue's messages may carry a partition key
-- (a tenant, an account) and a running limit. Fetch takes turns between a queue's partitions
-- and never holds more of a limited partition than its limit.
--
-- Turns: each partitioned message is given, at enqueue, the next turn of its partition (never
-- behind the queue's `round`, the latest turn a fetch took), and a partitioned queue's fetch
-- orders by (priority, turn, position): a partition with 5 messages has turns round+1..+5 and
-- goes between the 200,000 of a hot one instead of after them. Unkeyed messages of such a queue
-- take one turn each, like one more partition.
--
-- Running limit: the messages of a partition held by workers are its running count, so a
-- slot is free again exactly when its message is settled or recovered from a lost worker's
-- expired lease (never earlier). A fetch that checks a partition holds a transaction-level
-- advisory lock on it (tried, never waited for: another fetch deciding for that partition makes
-- this one skip it), so two fetches cannot both take its last slot.

ALTER TABLE @s.messages
    ADD COLUMN partition text,
    ADD COLUMN part_limit integer,
    ADD COLUMN turn bigint;

-- The latest turn a fetch took from the queue.
ALTER TABLE @s.queues ADD COLUMN round bigint NOT NULL DEFAULT 0;

-- Each partition's latest turn; a queue with a row here is fetched by turns.
CREATE TABLE @s.partition_turns (
    queue text NOT NULL,
    partition text NOT NULL,
    turn bigint NOT NULL,
    PRIMARY KEY (queue, partition)
);

CREATE INDEX messages_ready_turns ON @s.messages (queue, priority DESC, turn, pos)
    WHERE worker IS NULL AND due_at IS NULL AND partition IS NOT NULL;
CREATE INDEX messages_partition_held ON @s.messages (queue, partition)
    WHERE worker IS NOT NULL AND partition IS NOT NULL;

-- Takes p_count consecutive turns of p_partition in p_queue and returns the first: one after
-- its latest, and not behind the queue's round (a partition that was idle starts at the
-- current round, not ahead of every other).
CREATE FUNCTION @s.take_turns(p_queue text, p_partition text, p_count integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    current bigint;
    last bigint;
BEGIN
    SELECT round INTO current FROM @s.queues WHERE name = p_queue;
    current := coalesce(current, 0);
    INSERT INTO @s.partition_turns AS t (queue, partition, turn)
    VALUES (p_queue, p_partition, current + p_count)
    ON CONFLICT (queue, partition) DO UPDATE SET turn = greatest(t.turn, current) + p_count
    RETURNING t.turn INTO last;
    RETURN last - p_count + 1;
END
$$;

-- Takes up to p_want ready messages of partitioned queue p_queue into p_worker's hands, by
-- turns (see the top of this file), skipping partitions at their limit.
CREATE FUNCTION @s.fetch_turns(p_worker text, p_queue text, p_want integer, p_preference integer)
RETURNS TABLE (tag bigint, queue text, priority smallint, payload text, id uuid, pos bigint,
               preference integer, partition text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    current bigint;
    latest bigint;
    unkeyed bigint[];
    unkeyed_priorities smallint[];
    next_unkeyed integer := 1;
    candidate record;
    taken integer := 0;
    checked text[] := '{}';
    skipped text[] := '{}';
    running bigint;
BEGIN
    SELECT q.round INTO current FROM @s.queues q WHERE q.name = p_queue;
    current := coalesce(current, 0);
    latest := current;
    -- The unkeyed messages this call may take, in their order; each is given turn
    -- current + its place, between the partitions' turns.
    SELECT array_agg(u.tag ORDER BY u.priority DESC, u.pos),
           array_agg(u.priority ORDER BY u.priority DESC, u.pos)
    INTO unkeyed, unkeyed_priorities
    FROM (
        SELECT m.tag, m.priority, m.pos FROM @s.messages m
        WHERE m.queue = p_queue AND m.worker IS NULL AND m.due_at IS NULL AND m.partition IS NULL
        ORDER BY m.priority DESC, m.pos
        LIMIT p_want
        FOR UPDATE SKIP LOCKED
    ) u;
    unkeyed := coalesce(unkeyed, '{}');
    FOR candidate IN
        SELECT m.tag, m.priority, m.partition, m.part_limit, m.turn FROM @s.messages m
        WHERE m.queue = p_queue AND m.worker IS NULL AND m.due_at IS NULL AND m.partition IS NOT NULL
        ORDER BY m.priority DESC, m.turn, m.pos
        LIMIT p_want * 4
        FOR UPDATE SKIP LOCKED
    LOOP
        -- Unkeyed messages whose turn comes first.
        WHILE taken < p_want AND next_unkeyed <= cardinality(unkeyed)
              AND (unkeyed_priorities[next_unkeyed] > candidate.priority
                   OR (unkeyed_priorities[next_unkeyed] = candidate.priority
                       AND current + next_unkeyed <= candidate.turn)) LOOP
            RETURN QUERY
                UPDATE @s.messages m SET worker = p_worker, tag = nextval('@s.tags')
                WHERE m.tag = unkeyed[next_unkeyed]
                RETURNING m.tag, m.queue, m.priority, m.payload, m.id, m.pos, p_preference, m.partition;
            latest := greatest(latest, current + next_unkeyed);
            next_unkeyed := next_unkeyed + 1;
            taken := taken + 1;
        END LOOP;
        EXIT WHEN taken >= p_want;
        CONTINUE WHEN candidate.partition = ANY(skipped);
        IF candidate.part_limit IS NOT NULL THEN
            IF NOT candidate.partition = ANY(checked) THEN
                IF NOT pg_try_advisory_xact_lock(
                        hashtextextended('taskq partition ' || p_queue || chr(10) || candidate.partition, 0)) THEN
                    skipped := skipped || candidate.partition;
                    CONTINUE;
                END IF;
                checked := checked || candidate.partition;
            END IF;
            SELECT count(*) INTO running FROM @s.messages m
            WHERE m.queue = p_queue AND m.partition = candidate.partition AND m.worker IS NOT NULL;
            IF running >= candidate.part_limit THEN
                skipped := skipped || candidate.partition;
                CONTINUE;
            END IF;
        END IF;
        RETURN QUERY
            UPDATE @s.messages m SET worker = p_worker, tag = nextval('@s.tags')
            WHERE m.tag = candidate.tag
            RETURNING m.tag, m.queue, m.priority, m.payload, m.id, m.pos, p_preference, m.partition;
        latest := greatest(latest, candidate.turn);
        taken := taken + 1;
    END LOOP;
    WHILE taken < p_want AND next_unkeyed <= cardinality(unkeyed) LOOP
        RETURN QUERY
            UPDATE @s.messages m SET worker = p_worker, tag = nextval('@s.tags')
            WHERE m.tag = unkeyed[next_unkeyed]
            RETURNING m.tag, m.queue, m.priority, m.payload, m.id, m.pos, p_preference, m.partition;
        latest := greatest(latest, current + next_unkeyed);
        next_unkeyed := next_unkeyed + 1;
        taken := taken + 1;
    END LOOP;
    IF latest > current THEN
        UPDATE @s.queues q SET round = latest WHERE q.name = p_queue AND q.round < latest;
    END IF;
END
$$;

-- fetch() as in version 1, a partitioned queue (one with turns) taken by fetch_turns, each
-- message's partition returned with it, and the rows returned in the order they are handed
-- out (queue preference, then priority and position, or turns).
DROP FUNCTION @s.fetch(text, text[], integer);
CREATE FUNCTION @s.fetch(p_worker text, p_queues text[], p_max integer)
RETURNS TABLE (tag bigint, queue text, priority smallint, payload text, id uuid, pos bigint,
               preference integer, partition text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q text;
    i integer := 0;
    got integer := 0;
    n integer;
BEGIN
    IF EXISTS (SELECT 1 FROM @s.joined j WHERE j.worker = p_worker)
       AND (SELECT count(*) FROM @s.leases l WHERE l.worker = p_worker AND l.queue = ANY(p_queues))
           < (SELECT count(DISTINCT x) FROM unnest(p_queues) x) THEN
        RAISE EXCEPTION 'worker % lost its lease', p_worker USING ERRCODE = 'TQ001';
    END IF;
    FOREACH q IN ARRAY p_queues LOOP
        EXIT WHEN got >= p_max;
        i := i + 1;
        IF EXISTS (SELECT 1 FROM @s.partition_turns t WHERE t.queue = q) THEN
            RETURN QUERY SELECT * FROM @s.fetch_turns(p_worker, q, p_max - got, i);
        ELSE
            RETURN QUERY
                WITH picked AS (
                    SELECT m.tag FROM @s.messages m
                    WHERE m.queue = q AND m.worker IS NULL AND m.due_at IS NULL
                    ORDER BY m.priority DESC, m.pos
                    LIMIT p_max - got
                    FOR UPDATE SKIP LOCKED
                ), taken AS (
                    UPDATE @s.messages m SET worker = p_worker, tag = nextval('@s.tags')
                    FROM picked WHERE m.tag = picked.tag
                    RETURNING m.tag, m.queue, m.priority, m.payload, m.id, m.pos, i, m.partition
                )
                SELECT * FROM taken ORDER BY 3 DESC, 6;
        END IF;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            INSERT INTO @s.leases (worker, queue, until)
            VALUES (p_worker, q, now() + interval '30 seconds')
            ON CONFLICT DO NOTHING;
            got := got + n;
        END IF;
    END LOOP;
END
$$;
