WITH target AS (
    SELECT blueprint_id FROM bp_target ORDER BY version DESC LIMIT 1
), me AS (
    SELECT (SELECT count(*) FROM db_metadata_nexus) AS me_records,
           (SELECT state::TEXT FROM db_metadata_nexus
            WHERE nexus_id = $3) AS me_state
), deleted AS (
    DELETE FROM db_metadata_nexus
    WHERE nexus_id = ANY ($2::UUID[])
      AND EXISTS (SELECT 1 FROM target WHERE blueprint_id = $1)
    RETURNING nexus_id
), notified AS (
    SELECT pg_notify('baton_handoff', 'records_removed ' || COALESCE(($3)::TEXT, '-') || ' ' || txid_current()::TEXT) AS sent FROM deleted LIMIT 1
)
SELECT (SELECT blueprint_id FROM target) AS current_target,
       (SELECT count(*) FROM deleted) AS changed,
       (SELECT me_records FROM me) AS records,
       (SELECT me_state FROM me) AS executing_state,
       (SELECT count(*) FROM notified) AS notified;
