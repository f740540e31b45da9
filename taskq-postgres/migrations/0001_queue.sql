-- taskq's tables and functions, version 1. `@s` is the schema (quoted), `@ready` and
-- `@control` the notification channels, `@results` the results channel. Rows are deleted
-- when their message is acknowledged: nothing is updated to "done" and left behind.

-- Positions in a queue: the tail counts up, the head counts down, so a message put back at
-- the head (requeue, recovery) comes before every other, and ordering is one index scan.
CREATE SEQUENCE @s.tail_positions;
CREATE SEQUENCE @s.head_positions INCREMENT BY -1 START WITH -1 MINVALUE -9223372036854775807 MAXVALUE -1;
-- A delivery's receipt: a fresh tag at every fetch, so a stale delivery fences itself out.
CREATE SEQUENCE @s.tags;

-- Ready (due_at NULL, worker NULL), scheduled (due_at set) and held (worker set) messages.
CREATE TABLE @s.messages (
    tag bigint PRIMARY KEY DEFAULT nextval('@s.tags'),
    pos bigint NOT NULL DEFAULT nextval('@s.tail_positions'),
    queue text NOT NULL,
    priority smallint NOT NULL,
    id uuid NOT NULL,
    payload text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    due_at timestamptz,
    worker text,
    -- Times recovered from a lost worker (the poison count); kept across retries.
    redeliveries integer NOT NULL DEFAULT 0
);
CREATE INDEX messages_ready ON @s.messages (queue, priority DESC, pos) WHERE worker IS NULL AND due_at IS NULL;
CREATE INDEX messages_scheduled ON @s.messages (queue, due_at) WHERE worker IS NULL AND due_at IS NOT NULL;
CREATE INDEX messages_held ON @s.messages (worker, queue) WHERE worker IS NOT NULL;

-- Known queues, and how many dead letters each dropped at its caps.
CREATE TABLE @s.queues (
    name text PRIMARY KEY,
    dead_dropped bigint NOT NULL DEFAULT 0
);

-- Leases per (worker, queue), on the database's clock; a worker that heartbeated once has
-- joined, and from then on a missing lease means it was presumed lost.
CREATE TABLE @s.leases (
    worker text NOT NULL,
    queue text NOT NULL,
    until timestamptz NOT NULL,
    PRIMARY KEY (worker, queue)
);
CREATE TABLE @s.joined (worker text PRIMARY KEY);

CREATE TABLE @s.unique_keys (
    queue text NOT NULL,
    key text NOT NULL,
    holder uuid NOT NULL,
    until timestamptz NOT NULL,
    PRIMARY KEY (queue, key)
);

CREATE TABLE @s.dead_letters (
    seq bigserial PRIMARY KEY,
    queue text NOT NULL,
    id uuid,
    reason text NOT NULL,
    error text,
    worker text,
    at timestamptz NOT NULL DEFAULT now(),
    payload text NOT NULL,
    bytes bigint NOT NULL
);
CREATE INDEX dead_letters_queue ON @s.dead_letters (queue, seq);

CREATE TABLE @s.history (
    queue text NOT NULL,
    minute bigint NOT NULL,
    processed bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, minute)
);

CREATE TABLE @s.rate_limits (
    queue text NOT NULL,
    task text NOT NULL,
    tat timestamptz NOT NULL,
    PRIMARY KEY (queue, task)
);

CREATE TABLE @s.revocations (id uuid PRIMARY KEY, until timestamptz NOT NULL);
CREATE TABLE @s.worker_infos (id text PRIMARY KEY, info text NOT NULL, until timestamptz NOT NULL);
CREATE TABLE @s.lost_workers (seq bigserial PRIMARY KEY, id text NOT NULL, lost_at timestamptz NOT NULL, info text);
CREATE TABLE @s.declarations (name text PRIMARY KEY, declaration text NOT NULL);

-- Results by task id, each with its expiry (swept in batches).
CREATE TABLE @s.results (
    id uuid PRIMARY KEY,
    state text NOT NULL,
    record text NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX results_expiry ON @s.results (expires_at);

-- The current minute, as the history counts it.
CREATE FUNCTION @s.minute_now() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT floor(extract(epoch FROM now()) / 60)::bigint
$$;

-- Takes up to p_max ready messages of p_queues, in the order of preference, into p_worker's
-- hands. A worker that joined and lacks a lease on one of the queues was presumed lost:
-- nothing is taken (SQLSTATE TQ001).
CREATE FUNCTION @s.fetch(p_worker text, p_queues text[], p_max integer)
RETURNS TABLE (tag bigint, queue text, priority smallint, payload text, id uuid, pos bigint, preference integer)
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
        RETURN QUERY
            WITH picked AS (
                SELECT m.tag FROM @s.messages m
                WHERE m.queue = q AND m.worker IS NULL AND m.due_at IS NULL
                ORDER BY m.priority DESC, m.pos
                LIMIT p_max - got
                FOR UPDATE SKIP LOCKED
            )
            UPDATE @s.messages m SET worker = p_worker, tag = nextval('@s.tags')
            FROM picked WHERE m.tag = picked.tag
            RETURNING m.tag, m.queue, m.priority, m.payload, m.id, m.pos, i;
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

-- Puts p_worker's held messages p_tags back at the head of their levels, the first first.
CREATE FUNCTION @s.requeue(p_worker text, p_tags bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    k integer;
    moved integer := 0;
    n integer;
BEGIN
    FOR k IN REVERSE coalesce(array_upper(p_tags, 1), 0) .. 1 LOOP
        UPDATE @s.messages SET worker = NULL, pos = nextval('@s.head_positions')
        WHERE tag = p_tags[k] AND worker = p_worker;
        GET DIAGNOSTICS n = ROW_COUNT;
        moved := moved + n;
    END LOOP;
    IF moved > 0 THEN
        PERFORM pg_notify('@ready', '');
    END IF;
    RETURN moved;
END
$$;

-- Adds a dead letter, then drops the oldest of its queue until both caps hold (the newest
-- always stays), counting what was dropped.
CREATE FUNCTION @s.add_dead_letter(
    p_queue text, p_id uuid, p_reason text, p_error text, p_worker text, p_payload text,
    p_max_records bigint, p_max_bytes bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    total_records bigint;
    total_bytes bigint;
    dropped bigint := 0;
    oldest record;
BEGIN
    INSERT INTO @s.dead_letters (queue, id, reason, error, worker, payload, bytes)
    VALUES (p_queue, p_id, p_reason, p_error, p_worker, p_payload,
            length(p_payload) + coalesce(length(p_error), 0));
    SELECT count(*), coalesce(sum(bytes), 0) INTO total_records, total_bytes
    FROM @s.dead_letters WHERE queue = p_queue;
    WHILE total_records > 1 AND (total_records > greatest(p_max_records, 1) OR total_bytes > p_max_bytes) LOOP
        DELETE FROM @s.dead_letters d
        WHERE d.seq = (SELECT min(seq) FROM @s.dead_letters WHERE queue = p_queue)
        RETURNING d.bytes INTO oldest;
        total_records := total_records - 1;
        total_bytes := total_bytes - oldest.bytes;
        dropped := dropped + 1;
    END LOOP;
    IF dropped > 0 THEN
        INSERT INTO @s.queues (name, dead_dropped) VALUES (p_queue, dropped)
        ON CONFLICT (name) DO UPDATE SET dead_dropped = @s.queues.dead_dropped + EXCLUDED.dead_dropped;
    END IF;
    INSERT INTO @s.history (queue, minute, failed) VALUES (p_queue, @s.minute_now(), 1)
    ON CONFLICT (queue, minute) DO UPDATE SET failed = @s.history.failed + 1;
END
$$;

-- Moves p_worker's held message p_tag to the dead letters; false when it no longer holds it.
CREATE FUNCTION @s.dead_letter(
    p_worker text, p_tag bigint, p_reason text, p_error text, p_max_records bigint, p_max_bytes bigint
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    gone record;
BEGIN
    DELETE FROM @s.messages WHERE tag = p_tag AND worker = p_worker
    RETURNING queue, id, payload INTO gone;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM @s.add_dead_letter(gone.queue, gone.id, p_reason, p_error, p_worker, gone.payload,
                               p_max_records, p_max_bytes);
    RETURN true;
END
$$;

-- Records a heartbeat: p_worker's leases on p_queues run until now + p_ttl_ms. A renewing
-- worker missing a lease was presumed lost (SQLSTATE TQ001).
CREATE FUNCTION @s.heartbeat(p_worker text, p_queues text[], p_ttl_ms bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    joined_now integer;
BEGIN
    INSERT INTO @s.joined (worker) VALUES (p_worker) ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS joined_now = ROW_COUNT;
    IF joined_now = 0 AND (SELECT count(*) FROM @s.leases WHERE worker = p_worker AND queue = ANY(p_queues))
                          < (SELECT count(DISTINCT x) FROM unnest(p_queues) x) THEN
        RAISE EXCEPTION 'worker % lost its lease', p_worker USING ERRCODE = 'TQ001';
    END IF;
    INSERT INTO @s.leases (worker, queue, until)
    SELECT p_worker, x, now() + p_ttl_ms * interval '1 millisecond' FROM unnest(p_queues) x
    ON CONFLICT (worker, queue) DO UPDATE SET until = EXCLUDED.until;
END
$$;

-- Recovers what workers whose lease on one of p_queues expired held from that queue: back
-- at the head in hand-out order, or to the dead letters past p_max_redeliveries recoveries.
-- Deleting the expired lease is the claim that makes each recovery happen once.
CREATE FUNCTION @s.recover(
    p_queues text[], p_max_redeliveries integer, p_max_records bigint, p_max_bytes bigint
) RETURNS TABLE (worker text, outcome text, id uuid, payload text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    lost record;
    held record;
    requeued integer := 0;
BEGIN
    FOR lost IN
        DELETE FROM @s.leases l WHERE l.queue = ANY(p_queues) AND l.until < now()
        RETURNING l.worker, l.queue
    LOOP
        worker := lost.worker;
        outcome := 'lost';
        id := NULL;
        payload := NULL;
        RETURN NEXT;
        FOR held IN
            SELECT m.tag, m.id, m.payload, m.redeliveries FROM @s.messages m
            WHERE m.worker = lost.worker AND m.queue = lost.queue
            ORDER BY m.tag DESC
            FOR UPDATE
        LOOP
            IF held.redeliveries + 1 > p_max_redeliveries THEN
                DELETE FROM @s.messages WHERE tag = held.tag;
                PERFORM @s.add_dead_letter(lost.queue, held.id, 'worker_lost',
                    format('recovered from lost workers %s times', held.redeliveries + 1),
                    lost.worker, held.payload, p_max_records, p_max_bytes);
                outcome := 'dead';
                id := held.id;
                payload := held.payload;
                RETURN NEXT;
            ELSE
                UPDATE @s.messages SET worker = NULL, redeliveries = held.redeliveries + 1,
                    pos = nextval('@s.head_positions')
                WHERE tag = held.tag;
                requeued := requeued + 1;
                outcome := 'requeued';
                id := held.id;
                payload := NULL;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
    IF requeued > 0 THEN
        PERFORM pg_notify('@ready', '');
    END IF;
END
$$;

-- Puts everything p_worker holds from p_queues back at the head and drops its leases there.
CREATE FUNCTION @s.deregister(p_worker text, p_queues text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    held record;
    moved integer := 0;
BEGIN
    DELETE FROM @s.leases WHERE worker = p_worker AND queue = ANY(p_queues);
    FOR held IN
        SELECT tag FROM @s.messages WHERE worker = p_worker AND queue = ANY(p_queues)
        ORDER BY tag DESC FOR UPDATE
    LOOP
        UPDATE @s.messages SET worker = NULL, pos = nextval('@s.head_positions') WHERE tag = held.tag;
        moved := moved + 1;
    END LOOP;
    IF moved > 0 THEN
        PERFORM pg_notify('@ready', '');
    END IF;
END
$$;

-- The generic cell rate algorithm: the wait before the next start of p_task on p_queue, in
-- milliseconds, or NULL when it may start now (and the start is counted).
CREATE FUNCTION @s.rate_limit(p_queue text, p_task text, p_interval_us bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    current timestamptz;
BEGIN
    INSERT INTO @s.rate_limits (queue, task, tat) VALUES (p_queue, p_task, now())
    ON CONFLICT DO NOTHING;
    SELECT tat INTO current FROM @s.rate_limits WHERE queue = p_queue AND task = p_task FOR UPDATE;
    IF current > now() THEN
        RETURN ceil(extract(epoch FROM current - now()) * 1000)::bigint;
    END IF;
    UPDATE @s.rate_limits SET tat = now() + p_interval_us * interval '1 microsecond'
    WHERE queue = p_queue AND task = p_task;
    RETURN NULL;
END
$$;

-- Stores a result unless the stored state may not become the new one (results are
-- monotonic: SUCCESS is final, a final state only gives way to another final state).
CREATE FUNCTION @s.store_result(p_id uuid, p_state text, p_record text, p_ttl_ms bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO @s.results AS r (id, state, record, expires_at)
    VALUES (p_id, p_state, p_record, now() + p_ttl_ms * interval '1 millisecond')
    ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, record = EXCLUDED.record, expires_at = EXCLUDED.expires_at
    WHERE r.expires_at <= now()
       OR (r.state <> 'SUCCESS'
           AND (r.state NOT IN ('FAILURE', 'REVOKED', 'EXPIRED')
                OR EXCLUDED.state IN ('SUCCESS', 'FAILURE', 'REVOKED', 'EXPIRED')));
    PERFORM pg_notify('@results', p_id::text);
END
$$;
