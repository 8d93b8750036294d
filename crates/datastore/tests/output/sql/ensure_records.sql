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
      AND (SELECT me_records = 0 OR me_state = 'active' FROM me)
    ON CONFLICT (nexus_id) DO NOTHING
    RETURNING nexus_id
)
SELECT (SELECT blueprint_id FROM target) AS current_target,
       (SELECT count(*) FROM inserted) AS changed,
       (SELECT me_records FROM me) AS records,
       (SELECT me_state FROM me) AS executing_state;
