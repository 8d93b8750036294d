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
), notified AS (
    SELECT pg_notify('baton_handoff', 'handoff ' || COALESCE(($1)::TEXT, '-') || ' ' || txid_current()::TEXT) AS sent FROM promoted LIMIT 1
)
SELECT (SELECT n FROM blocking) AS blocking,
       (SELECT state FROM me) AS my_state,
       (SELECT count(*) FROM promoted) AS promoted,
       (SELECT count(*) FROM notified) AS notified;
