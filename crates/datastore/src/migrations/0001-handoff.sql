-- The coordinated Nexus handoff: blueprints, the target history, and the
-- per-Nexus database access records. Portable to CockroachDB: plain types,
-- an enum type, no PostgreSQL-only features.

CREATE TYPE db_metadata_nexus_state AS ENUM ('active', 'not_yet', 'quiesced');

CREATE TABLE db_metadata_nexus (
    nexus_id UUID NOT NULL PRIMARY KEY,
    last_drained_blueprint_id UUID,
    state db_metadata_nexus_state NOT NULL
);

CREATE UNIQUE INDEX lookup_db_metadata_nexus_by_state
    ON db_metadata_nexus (state, nexus_id);

-- The fields the protocol uses, plus the original document as text: JSONB
-- would reorder keys and drop duplicate ones, and the document must come
-- back exactly as it was imported.
CREATE TABLE blueprint (
    id UUID NOT NULL PRIMARY KEY,
    parent_blueprint_id UUID,
    nexus_generation INT8 NOT NULL CHECK (nexus_generation >= 1),
    time_created TIMESTAMPTZ NOT NULL,
    creator TEXT NOT NULL,
    comment TEXT NOT NULL,
    document TEXT NOT NULL
);

-- Append-only: the row with the highest version is the current target.
CREATE TABLE bp_target (
    version INT8 NOT NULL PRIMARY KEY CHECK (version >= 1),
    blueprint_id UUID NOT NULL REFERENCES blueprint (id),
    enabled BOOL NOT NULL,
    time_made_target TIMESTAMPTZ NOT NULL
);
