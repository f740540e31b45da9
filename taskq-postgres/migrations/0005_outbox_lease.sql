-- The outbox, version 5: a relay claims rows with a committed lease before it sends them,
-- instead of holding row locks across the send. A relay killed after the broker confirmed,
-- before its delete committed, leaves rows whose lease runs out; the next relay sends them
-- again only then, so the first copy has (almost always) run and stored its result, which
-- is what a worker on a broker without uniqueness keys checks before running a copy.
ALTER TABLE @s.outbox ADD COLUMN relayed_at timestamptz;
