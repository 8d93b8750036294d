-- A service connection, at set-up:
SELECT pg_advisory_lock_shared($1, $2);
SELECT (SELECT count(*) FROM db_metadata_nexus) AS records,
       (SELECT state::TEXT FROM db_metadata_nexus WHERE nexus_id = $1) AS state;

-- The quiesced mark's transaction, before the mark:
SET LOCAL lock_timeout = '2s';
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n
FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 2
  AND classid = ($1::INT4)::OID AND objid = ($2::INT4)::OID
  AND granted AND pid <> pg_backend_pid();
SELECT pg_advisory_xact_lock($1, $2);
