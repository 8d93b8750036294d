WITH changed AS (
    UPDATE db_metadata_nexus SET last_drained_blueprint_id = $2
    WHERE nexus_id = $1 AND state = 'active'
    RETURNING nexus_id
)
SELECT (SELECT count(*) FROM changed) AS n;
