WITH changed AS (
    UPDATE db_metadata_nexus SET state = 'quiesced'
    WHERE nexus_id = $1
    RETURNING nexus_id
), notified AS (
    SELECT pg_notify('baton_handoff', 'quiesced ' || COALESCE(($1)::TEXT, '-') || ' ' || txid_current()::TEXT) AS sent FROM changed LIMIT 1
)
SELECT (SELECT count(*) FROM changed) AS n,
       (SELECT count(*) FROM notified) AS notified;
