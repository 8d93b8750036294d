WITH target AS (
    SELECT blueprint_id FROM bp_target ORDER BY version DESC LIMIT 1
), me AS (
    SELECT (SELECT count(*) FROM db_metadata_nexus) AS me_records,
           (SELECT state::TEXT FROM db_metadata_nexus
            WHERE nexus_id = $4) AS me_state
), inserted AS (
    INSERT INTO db_metadata_nexus (nexus_id, state, last_drained_blueprint_id)
    SELECT id, state::db_metadata_nexus_state, NULL
    FROM unnest($2::UUID[], $3::TEXT[]) AS wanted (id, state)
    WHERE EXISTS (SELECT 1 FROM target WHERE blueprint_id = $1)
    ON CONFLICT (nexus_id) DO NOTHING
    RETURNING nexus_id
), notified AS (
    SELECT pg_notify('baton_handoff', 'records_added ' || COALESCE(($4)::TEXT, '-') || ' ' || txid_current()::TEXT) AS sent FROM inserted LIMIT 1
)
SELECT (SELECT blueprint_id FROM target) AS current_target,
       (SELECT count(*) FROM inserted) AS changed,
       (SELECT me_records FROM me) AS records,
       (SELECT me_state FROM me) AS executing_state,
       (SELECT count(*) FROM notified) AS notified;
