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
      AND (SELECT me_records = 0 OR me_state = 'active' FROM me)
    RETURNING nexus_id
)
SELECT (SELECT blueprint_id FROM target) AS current_target,
       (SELECT count(*) FROM deleted) AS changed,
       (SELECT me_records FROM me) AS records,
       (SELECT me_state FROM me) AS executing_state;
