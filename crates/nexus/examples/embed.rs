//! The README's embedding example, verbatim (a test checks the README
//! still shows exactly this file), so it always compiles.

use baton_datastore::diesel;
use baton_datastore::diesel_async::RunQueryDsl;
use baton_datastore::{Migration, SchemaComponent};
use baton_nexus::{Nexus, NexusConfig, OmicronZoneUuid};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A service passes its own logger; Baton logs through it.
    let log = slog::Logger::root(slog::Discard, slog::o!());
    // The zone id and the database URL come from the service's config.
    let zone_id: OmicronZoneUuid = std::env::var("ZONE_ID")?.parse()?;
    let url = std::env::var("DATABASE_URL")?;
    let schema = SchemaComponent::new(
        "ledger",
        vec![Migration::new(
            1,
            "ledger entries",
            "CREATE TABLE ledger_entry (nexus_id UUID, n INT8)",
        )],
    )?;
    // Inside the tokio runtime: the Nexus runs in tasks of its own.
    let config = NexusConfig::new(zone_id, url).with_component(schema);
    let nexus = Nexus::start(&log, config);

    // A request: one claim from the fenced pool, released on drop. A
    // refusal that another instance may serve says so
    // (`is_unavailable()`: answer 503, the client tries elsewhere).
    let mut claim = nexus.claim("append").await?;
    diesel::sql_query("INSERT INTO ledger_entry VALUES (NULL, 1)")
        .execute(claim.connection())
        .await?;
    // Several statements in one SERIALIZABLE transaction, retried
    // whole on a serialization failure: the body is an async closure.
    let entries = vec![2_i64, 3];
    claim
        .transaction("append two", async move |conn| {
            for n in &entries {
                diesel::sql_query("INSERT INTO ledger_entry VALUES (NULL, $1)")
                    .bind::<diesel::sql_types::BigInt, _>(*n)
                    .execute(conn)
                    .await?;
            }
            Ok(())
        })
        .await?;
    drop(claim);

    // A longer job: a work guard for its whole life, claims as it goes.
    let guard = nexus.work_guard("nightly job")?;
    drop(guard);

    // A graceful stop (a restart): drains the work, leaves the record.
    nexus.stop().await;
    Ok(())
}
