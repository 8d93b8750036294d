-- The schema versions of the services that embed Baton, one row per
-- applied migration of each component. Baton's own version stays in
-- baton_schema_version.
CREATE TABLE baton_component_version (
    component TEXT NOT NULL,
    version INT8 NOT NULL CHECK (version >= 1),
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
);
