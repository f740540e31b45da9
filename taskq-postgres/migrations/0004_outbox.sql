-- The outbox, version 4: tasks for another broker (Redis, RabbitMQ) written in the
-- application's transaction, moved to that broker by a relay once committed.
CREATE TABLE @s.outbox (
    seq bigserial PRIMARY KEY,
    queue text NOT NULL,
    priority smallint NOT NULL,
    id uuid NOT NULL,
    payload text NOT NULL,
    eta timestamptz,
    -- The task's own uniqueness claim, when it declares one.
    unique_key text,
    unique_ms bigint,
    written_at timestamptz NOT NULL DEFAULT now()
);
