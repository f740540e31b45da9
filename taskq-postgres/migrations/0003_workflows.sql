-- Workflows, version 3: a chain's, group's or chord's record, and what each group member
-- reported, deleted with the record when it expires.
CREATE TABLE @s.workflows (
    id uuid PRIMARY KEY,
    record text NOT NULL,
    failed boolean NOT NULL DEFAULT false,
    expires_at timestamptz NOT NULL
);
CREATE INDEX workflows_expiry ON @s.workflows (expires_at);
CREATE TABLE @s.workflow_outcomes (
    workflow uuid NOT NULL REFERENCES @s.workflows (id) ON DELETE CASCADE,
    member integer NOT NULL,
    outcome text NOT NULL,
    PRIMARY KEY (workflow, member)
);

-- Records member p_index of p_of's outcome in group p_group (the first report of a member
-- counts; a repeated one changes nothing) and says what the group's state now calls for:
-- 'complete' with every outcome in member order, 'failed' with this outcome when it is the
-- group's first failure, else 'waiting' (also for an unknown or expired group). The group
-- lives at least p_ttl_ms longer. The record's row lock orders concurrent reports.
CREATE FUNCTION @s.report_member(
    p_group uuid, p_index integer, p_of integer, p_outcome text, p_success boolean, p_ttl_ms bigint
) RETURNS TABLE (status text, group_record text, outcomes text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    stored record;
    first boolean;
    reported integer;
BEGIN
    SELECT w.record, w.failed INTO stored FROM @s.workflows w
    WHERE w.id = p_group AND w.expires_at > now() FOR UPDATE;
    IF NOT FOUND THEN
        status := 'waiting';
        RETURN NEXT;
        RETURN;
    END IF;
    UPDATE @s.workflows SET expires_at = greatest(expires_at, now() + p_ttl_ms * interval '1 millisecond')
    WHERE id = p_group;
    INSERT INTO @s.workflow_outcomes (workflow, member, outcome) VALUES (p_group, p_index, p_outcome)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS reported = ROW_COUNT;
    first := reported > 0;
    SELECT count(*) INTO reported FROM @s.workflow_outcomes WHERE workflow = p_group;
    IF reported >= p_of THEN
        status := 'complete';
        group_record := stored.record;
        SELECT array_agg(o.outcome ORDER BY o.member) INTO outcomes
        FROM @s.workflow_outcomes o WHERE o.workflow = p_group;
        RETURN NEXT;
        RETURN;
    END IF;
    IF first AND NOT p_success AND NOT stored.failed THEN
        UPDATE @s.workflows SET failed = true WHERE id = p_group;
        status := 'failed';
        group_record := stored.record;
        outcomes := ARRAY[p_outcome];
        RETURN NEXT;
        RETURN;
    END IF;
    status := 'waiting';
    RETURN NEXT;
END
$$;
