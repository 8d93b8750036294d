WITH blocking AS (
    SELECT count(*) AS n FROM db_metadata_nexus
    WHERE state NOT IN ('not_yet', 'quiesced')
), me AS (
    SELECT state FROM db_metadata_nexus WHERE nexus_id = $1
), promoted AS (
    UPDATE db_metadata_nexus SET state = 'active'
    WHERE state = 'not_yet'
      AND (SELECT n FROM blocking) = 0
      AND (SELECT state FROM me) = 'not_yet'
    RETURNING nexus_id
)
SELECT (SELECT n FROM blocking) AS blocking,
       (SELECT state FROM me) AS my_state,
       (SELECT count(*) FROM promoted) AS promoted;
