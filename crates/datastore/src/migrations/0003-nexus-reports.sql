-- Each Nexus instance's latest report of itself (its lifecycle phase,
-- work and claims), for `baton status`. Reports are never service data:
-- an instance writes them on a connection of its own outside its drain
-- fence, closed before it marks itself quiesced (see the protocol notes).
CREATE TABLE baton_nexus_report (
    nexus_id UUID NOT NULL PRIMARY KEY,
    -- The report as a JSON document (text, so any SQL database stores it).
    report TEXT NOT NULL,
    reported_at TIMESTAMPTZ NOT NULL
);
