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

-- The latest turn a fetch took from the queue; and whether it is paused (`taskq queue pause`:
-- every fetch skips it).
ALTER TABLE @s.queues
    ADD COLUMN round bigint NOT NULL DEFAULT 0,
    ADD COLUMN paused boolean NOT NULL DEFAULT false;

-- Each partition's latest turn; a queue with a row here is fetched by turns.
CREATE TABLE @s.partition_turns (
    queue text NOT NULL,
    partition text NOT NULL,
    turn bigint NOT NULL,
    PRIMARY KEY (queue, partition)
);

-- Ready messages: unkeyed ones by (priority, position), partitioned ones by (priority, turn,
-- position). Each index holds only its own kind, so that a partitioned queue's fetch finds its
-- few unkeyed messages without reading past its keyed backlog.
DROP INDEX @s.messages_ready;
CREATE INDEX messages_ready ON @s.messages (queue, priority DESC, pos)
    WHERE worker IS NULL AND due_at IS NULL AND partition IS NULL;
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
-- turns (see the top of this file), skipping partitions at their limit: chooses in a loop,
-- then takes the chosen in one UPDATE and returns them in the order chosen.
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
    chosen bigint[] := '{}';
    -- Limited partitions seen by this call, and how many more of each it may take.
    limited text[] := '{}';
    room integer[] := '{}';
    slot integer;
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
        WHILE cardinality(chosen) < p_want AND next_unkeyed <= cardinality(unkeyed)
              AND (unkeyed_priorities[next_unkeyed] > candidate.priority
                   OR (unkeyed_priorities[next_unkeyed] = candidate.priority
                       AND current + next_unkeyed <= candidate.turn)) LOOP
            chosen := chosen || unkeyed[next_unkeyed];
            latest := greatest(latest, current + next_unkeyed);
            next_unkeyed := next_unkeyed + 1;
        END LOOP;
        EXIT WHEN cardinality(chosen) >= p_want;
        IF candidate.part_limit IS NOT NULL THEN
            slot := array_position(limited, candidate.partition);
            IF slot IS NULL THEN
                -- First seen: its room is its limit less its held messages, counted under its
                -- lock; a partition another fetch is deciding for gets no room this time.
                limited := limited || candidate.partition;
                slot := cardinality(limited);
                IF pg_try_advisory_xact_lock(
                        hashtextextended('taskq partition ' || p_queue || chr(10) || candidate.partition, 0)) THEN
                    SELECT count(*) INTO running FROM @s.messages m
                    WHERE m.queue = p_queue AND m.partition = candidate.partition AND m.worker IS NOT NULL;
                    room := room || greatest(candidate.part_limit - running, 0)::integer;
                ELSE
                    room := room || 0;
                END IF;
            END IF;
            CONTINUE WHEN room[slot] <= 0;
            room[slot] := room[slot] - 1;
        END IF;
        chosen := chosen || candidate.tag;
        latest := greatest(latest, candidate.turn);
    END LOOP;
    WHILE cardinality(chosen) < p_want AND next_unkeyed <= cardinality(unkeyed) LOOP
        chosen := chosen || unkeyed[next_unkeyed];
        latest := greatest(latest, current + next_unkeyed);
        next_unkeyed := next_unkeyed + 1;
    END LOOP;
    IF latest > current THEN
        UPDATE @s.queues q SET round = latest WHERE q.name = p_queue AND q.round < latest;
    END IF;
    RETURN QUERY
        WITH taken AS (
            UPDATE @s.messages m SET worker = p_worker, tag = nextval('@s.tags')
            FROM unnest(chosen) WITH ORDINALITY AS c(old_tag, ord)
            WHERE m.tag = c.old_tag
            RETURNING m.tag, m.queue, m.priority, m.payload, m.id, m.pos, m.partition, c.ord
        )
        SELECT t.tag, t.queue, t.priority, t.payload, t.id, t.pos, p_preference, t.partition
        FROM taken t ORDER BY t.ord;
END
$$;

-- fetch() as in version 1, a paused queue skipped, a partitioned queue (one with turns) taken
-- by fetch_turns, each
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
        CONTINUE WHEN EXISTS (SELECT 1 FROM @s.queues k WHERE k.name = q AND k.paused);
        IF EXISTS (SELECT 1 FROM @s.partition_turns t WHERE t.queue = q) THEN
            RETURN QUERY SELECT * FROM @s.fetch_turns(p_worker, q, p_max - got, i);
        ELSE
            RETURN QUERY
                WITH picked AS (
                    SELECT m.tag FROM @s.messages m
                    WHERE m.queue = q AND m.worker IS NULL AND m.due_at IS NULL AND m.partition IS NULL
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

-- Debounce and throttle (docs/partitions.md, "Debounce and throttle"): per (queue, key), the
-- invocation that holds the key (`id`, and `tag` while it waits scheduled), when its burst
-- began (`first`), when its window starts and ends.
CREATE TABLE @s.flows (
    queue text NOT NULL,
    key text NOT NULL,
    id uuid NOT NULL,
    tag bigint,
    first timestamptz NOT NULL,
    start timestamptz NOT NULL,
    until timestamptz NOT NULL,
    PRIMARY KEY (queue, key)
);
CREATE INDEX flows_until ON @s.flows (queue, until);

-- Debounce ('debounce') or throttle ('throttle', 'throttle-last') on p_key, decided and
-- written in one step under the key's lock, so racing producers see one another; the same
-- answers as Redis's enqueue_keyed.lua: ('written', id) this id will run, ('dropped', id) the
-- window's id, ('resend', id) send again carrying this id (NULL: a fresh one), ('full', NULL)
-- the queue is at its bound (p_bound, 0 for none).
CREATE FUNCTION @s.enqueue_keyed(
    p_mode text, p_queue text, p_key text, p_priority smallint, p_id uuid, p_payload text,
    p_window_ms bigint, p_max_wait_ms bigint, p_expect uuid, p_partition text, p_limit integer,
    p_bound bigint
) RETURNS TABLE (kind text, id uuid)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    held record;
    known boolean;
    refusal text;
    alive boolean := false;
    due timestamptz;
    window_length interval := p_window_ms * interval '1 millisecond';
    written bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('taskq flow ' || p_queue || chr(10) || p_key, 0));
    INSERT INTO @s.queues (name) VALUES (p_queue) ON CONFLICT DO NOTHING;
    -- Keys whose windows ended a minute ago are forgotten, a few per call.
    DELETE FROM @s.flows f WHERE (f.queue, f.key) IN (
        SELECT o.queue, o.key FROM @s.flows o
        WHERE o.queue = p_queue AND o.until < now() - interval '1 minute' AND o.key <> p_key
        LIMIT 16);
    SELECT f.id, f.tag, f.first, f.start, f.until INTO held
    FROM @s.flows f WHERE f.queue = p_queue AND f.key = p_key;
    known := FOUND;
    IF known AND held.tag IS NOT NULL THEN
        alive := EXISTS (SELECT 1 FROM @s.messages m
                         WHERE m.tag = held.tag AND m.worker IS NULL AND m.due_at IS NOT NULL);
    END IF;

    IF p_mode = 'debounce' THEN
        IF alive THEN
            IF p_expect IS DISTINCT FROM held.id THEN
                RETURN QUERY SELECT 'resend'::text, held.id;
                RETURN;
            END IF;
            due := now() + window_length;
            IF p_max_wait_ms > 0 THEN
                due := least(due, held.first + p_max_wait_ms * interval '1 millisecond');
            END IF;
            UPDATE @s.messages m SET payload = p_payload, priority = p_priority, due_at = due
            WHERE m.tag = held.tag;
            UPDATE @s.flows f SET until = due WHERE f.queue = p_queue AND f.key = p_key;
            RETURN QUERY SELECT 'written'::text, held.id;
            RETURN;
        END IF;
        refusal := @s.refuse_fresh(p_expect, p_queue, p_bound);
        IF refusal IS NOT NULL THEN
            RETURN QUERY SELECT refusal, NULL::uuid;
            RETURN;
        END IF;
        due := now() + window_length;
        IF p_max_wait_ms > 0 THEN
            due := least(due, now() + p_max_wait_ms * interval '1 millisecond');
        END IF;
        written := @s.insert_keyed(p_queue, p_priority, p_id, p_payload, due, p_partition, p_limit);
        INSERT INTO @s.flows AS f (queue, key, id, tag, first, start, until)
        VALUES (p_queue, p_key, p_id, written, now(), now(), due)
        ON CONFLICT (queue, key) DO UPDATE SET id = EXCLUDED.id, tag = EXCLUDED.tag,
            first = EXCLUDED.first, start = EXCLUDED.start, until = EXCLUDED.until;
        RETURN QUERY SELECT 'written'::text, p_id;
        RETURN;
    END IF;

    IF known AND now() < held.until THEN
        IF p_mode = 'throttle' THEN
            RETURN QUERY SELECT 'dropped'::text, held.id;
            RETURN;
        END IF;
        IF now() < held.start AND alive THEN
            -- The next window's run still waits: it takes these arguments, at the same time.
            IF p_expect IS DISTINCT FROM held.id THEN
                RETURN QUERY SELECT 'resend'::text, held.id;
                RETURN;
            END IF;
            UPDATE @s.messages m SET payload = p_payload, priority = p_priority WHERE m.tag = held.tag;
            RETURN QUERY SELECT 'written'::text, held.id;
            RETURN;
        END IF;
        refusal := @s.refuse_fresh(p_expect, p_queue, p_bound);
        IF refusal IS NOT NULL THEN
            RETURN QUERY SELECT refusal, NULL::uuid;
            RETURN;
        END IF;
        -- Kept for the window's end, where its run holds the next window.
        written := @s.insert_keyed(p_queue, p_priority, p_id, p_payload, held.until, p_partition, p_limit);
        UPDATE @s.flows f SET id = p_id, tag = written, first = now(), start = held.until,
            until = held.until + window_length
        WHERE f.queue = p_queue AND f.key = p_key;
        RETURN QUERY SELECT 'written'::text, p_id;
        RETURN;
    END IF;
    refusal := @s.refuse_fresh(p_expect, p_queue, p_bound);
    IF refusal IS NOT NULL THEN
        RETURN QUERY SELECT refusal, NULL::uuid;
        RETURN;
    END IF;
    PERFORM @s.insert_keyed(p_queue, p_priority, p_id, p_payload, NULL, p_partition, p_limit);
    INSERT INTO @s.flows AS f (queue, key, id, tag, first, start, until)
    VALUES (p_queue, p_key, p_id, NULL, now(), now(), now() + window_length)
    ON CONFLICT (queue, key) DO UPDATE SET id = EXCLUDED.id, tag = NULL,
        first = EXCLUDED.first, start = EXCLUDED.start, until = EXCLUDED.until;
    RETURN QUERY SELECT 'written'::text, p_id;
END
$$;

-- Why a call that would start a fresh invocation cannot: 'resend' when it expected to
-- replace one (which has left the pending set), 'full' when the queue is at its bound; NULL
-- when it may.
CREATE FUNCTION @s.refuse_fresh(p_expect uuid, p_queue text, p_bound bigint) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF p_expect IS NOT NULL THEN
        RETURN 'resend';
    END IF;
    IF NOT @s.has_room(p_queue, p_bound) THEN
        RETURN 'full';
    END IF;
    RETURN NULL;
END
$$;

-- Whether p_queue holds fewer than p_bound waiting messages (ready and scheduled; always
-- with p_bound 0), under the queue's lock (the one bounded enqueues take) until commit.
CREATE FUNCTION @s.has_room(p_queue text, p_bound bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_bound <= 0 THEN
        RETURN true;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('@s.' || p_queue));
    RETURN (SELECT count(*) FROM @s.messages WHERE queue = p_queue AND worker IS NULL) < p_bound;
END
$$;

-- Adds one message of a keyed flow, scheduled at p_due (ready now when NULL), in its
-- partition's next turn when it has one; returns its tag.
CREATE FUNCTION @s.insert_keyed(
    p_queue text, p_priority smallint, p_id uuid, p_payload text, p_due timestamptz,
    p_partition text, p_limit integer
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    written bigint;
BEGIN
    INSERT INTO @s.messages (queue, priority, id, payload, due_at, partition, part_limit, turn)
    VALUES (p_queue, p_priority, p_id, p_payload, p_due, p_partition,
            CASE WHEN p_partition IS NOT NULL THEN p_limit END,
            CASE WHEN p_partition IS NOT NULL THEN @s.take_turns(p_queue, p_partition, 1) END)
    RETURNING tag INTO written;
    IF p_due IS NULL THEN
        PERFORM pg_notify('@ready', '');
    END IF;
    RETURN written;
END
$$;
