-- The beat's shared state, version 2: the leader lock (one row, with its owner and expiry on
-- the database's clock), the last slot fired per entry, and the leader's published status.
CREATE TABLE @s.beat_lock (
    id integer PRIMARY KEY CHECK (id = 1),
    owner text NOT NULL,
    until timestamptz NOT NULL
);
CREATE TABLE @s.beat_fires (
    entry text PRIMARY KEY,
    slot timestamptz NOT NULL
);
CREATE TABLE @s.beat_status (
    id integer PRIMARY KEY CHECK (id = 1),
    status text NOT NULL,
    until timestamptz NOT NULL
);
