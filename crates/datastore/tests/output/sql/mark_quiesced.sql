WITH changed AS (
    UPDATE db_metadata_nexus SET state = 'quiesced'
    WHERE nexus_id = $1
    RETURNING nexus_id
)
SELECT (SELECT count(*) FROM changed) AS n;
