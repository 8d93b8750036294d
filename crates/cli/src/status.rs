//! `baton status`: the whole handoff at once, from the target, the
//! records and each instance's last report.

use std::collections::BTreeSet;
use std::time::Duration;

use baton_datastore::{DataStore, Error as DbError, Reports, UnreadableReport};
use baton_planner::{
    Shown, StatusFacts, Wait, generation_in_control, human_age,
};
use baton_types::{Blueprint, Held, NexusRecord, StoredReport};
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use tabled::Tabled;

use crate::context::Context;
use crate::failure::Failure;
use crate::output;

const FIELDS: &str = "\
JSON fields (stable):
  target                 {blueprint_id, nexus_generation, enabled}, or null
  generation_in_control  the generation of the active records, or null
  nexus                  one entry per Nexus zone of the target and per record:
    nexus_id, generation (in the target, or null), record (active, not_yet,
    quiesced, or null), phase (as last reported: starting,
    waiting_for_record, waiting_for_handoff, migrating, running, quiescing,
    quiesced, refused, stopped, failed, fenced; unless the records know
    better: quiesced when its record is, gone when its zone is expunged
    and its record deleted, taking_over when its record became active
    after a report that still waited; null if it never reported), step
    (the quiesce step), since (when it entered the phase, RFC 3339),
    reported_ago_ms, report_unreadable (why its report cannot be read;
    only present then, and the report's fields are null),
    last_drained_blueprint_id, work_in_flight,
    oldest_work {op, age_ms}, claims_held, oldest_claim {op, age_ms}
  waiting_on             what the handoff, the bump or the cleanup waits on:
    [{waiting (execution, handoff, bump, cleanup), nexus_id (or null),
    reason}]; empty when nothing waits
  done                   true when nothing waits

With --watch, the view is redrawn every --interval seconds (from 0.05 to
86400), and at once when the handoff's state changes (a target set, a
record added, drained, quiesced, handed off or removed), until nothing
waits; with --watch --json, one JSON object per line per redraw. An
announcement only makes it look: one that changed none of these (any
role can send them) redraws nothing, and it looks at most 10 times a
second however many arrive. While the database does not answer (a
failover under way, a server down), --watch says so, naming the hosts
it tried, at each interval (on stderr with --json) and goes on
watching; without --watch that line is the error (exit 1).";

/// The bounds of `--interval`, in seconds.
const INTERVAL_SECONDS: std::ops::RangeInclusive<f64> = 0.05..=86_400.0;

/// The shortest time between two looks an announcement causes.
const RECHECK_GAP: Duration = Duration::from_millis(100);

/// `--interval`: seconds within [`INTERVAL_SECONDS`].
fn interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !INTERVAL_SECONDS.contains(&seconds) {
        return Err(format!(
            "{text} is outside {} to {} seconds (one day)",
            INTERVAL_SECONDS.start(),
            INTERVAL_SECONDS.end()
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The whole handoff at once: the target, the generation in control,
/// every Nexus (record, last reported phase, work and claims), and what
/// the handoff, the bump or the cleanup waits on.
#[derive(Debug, Args)]
#[command(after_help = FIELDS)]
pub(crate) struct StatusArgs {
    /// Print one JSON document (one per line with --watch).
    #[arg(long)]
    json: bool,
    /// Redraw until nothing waits.
    #[arg(long)]
    watch: bool,
    /// Seconds between redraws with --watch, from 0.05 to 86400.
    #[arg(long, default_value = "2", value_parser = interval)]
    interval: Duration,
}

#[derive(Serialize)]
struct TargetJson {
    blueprint_id: BlueprintUuid,
    nexus_generation: u64,
    enabled: bool,
}

#[derive(Serialize)]
struct NexusJson {
    nexus_id: OmicronZoneUuid,
    /// Why its stored report cannot be read (then the report's fields
    /// are null); absent when it can.
    #[serde(skip_serializing_if = "Option::is_none")]
    report_unreadable: Option<String>,
    generation: Option<u64>,
    record: Option<&'static str>,
    phase: Option<String>,
    step: Option<u8>,
    since: Option<DateTime<Utc>>,
    reported_ago_ms: Option<u64>,
    last_drained_blueprint_id: Option<BlueprintUuid>,
    work_in_flight: Option<u64>,
    oldest_work: Option<Held>,
    claims_held: Option<u64>,
    oldest_claim: Option<Held>,
}

#[derive(Serialize)]
struct StatusJson {
    target: Option<TargetJson>,
    generation_in_control: Option<u64>,
    nexus: Vec<NexusJson>,
    waiting_on: Vec<Wait>,
    done: bool,
}

pub(crate) fn run(ctx: &Context, args: StatusArgs) -> Result<(), Failure> {
    let ds = ctx.datastore()?;
    let hosts = baton_datastore::url_hosts(&ctx.url()?);
    ctx.block_on(async {
        loop {
            match watch(&ds, &hosts, &args).await {
                // A failover under way ends: `--watch` says so at each
                // interval and goes on watching (the operator stops it).
                Err(Unseen::NotAnswering(line)) if args.watch => {
                    draw_not_answering(&line, &args);
                    tokio::time::sleep(args.interval).await;
                }
                done => return done.map_err(Failure::from),
            }
        }
    })
}

/// Draws the status, and with `--watch` redraws it until nothing waits.
async fn watch(
    ds: &DataStore,
    hosts: &[String],
    args: &StatusArgs,
) -> Result<(), Unseen> {
    // A redraw also comes as soon as the handoff's state changes
    // (announced; see the README), where the database announces.
    let mut listener = match args.watch && ds.notifies() {
        true => ds.listen().await.ok(),
        false => None,
    };
    let mut status = look(ds, hosts).await?;
    loop {
        draw(&status, args);
        if !args.watch || status.done {
            return Ok(());
        }
        let next = tokio::time::Instant::now() + args.interval;
        status = loop {
            let Some(heard) = &mut listener else {
                tokio::time::sleep_until(next).await;
                break look(ds, hosts).await?;
            };
            tokio::select! {
                () = tokio::time::sleep_until(next) => {
                    break look(ds, hosts).await?;
                }
                batch = heard.next_batch() => if batch.is_none() {
                    listener = None;
                    continue;
                },
            }
            // Only a hint: look (at most every RECHECK_GAP), and
            // redraw only if what it announces changed.
            let gap = tokio::time::Instant::now() + RECHECK_GAP;
            tokio::time::sleep_until(gap.min(next)).await;
            if let Some(heard) = &mut listener {
                heard.skip_received();
            }
            let looked = look(ds, hosts).await?;
            if announced(&looked) != announced(&status) {
                break looked;
            }
        };
    }
}

/// `--watch` while the database does not answer: the line under the
/// redraw's time on stdout; with `--json`, on stderr, so that stdout
/// stays one status object per line.
fn draw_not_answering(line: &str, args: &StatusArgs) {
    let at = Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    if args.json {
        output::note(&format!("{at}: {line}"));
    } else {
        output::line(&format!("-- {at} --\n{line}"));
    }
}

fn draw(status: &StatusJson, args: &StatusArgs) {
    if args.json {
        if args.watch {
            output::json_line(status);
        } else {
            output::json(status);
        }
    } else {
        if args.watch {
            output::line(&format!(
                "-- {} --",
                Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        output::line(&render(status));
    }
}

/// What an announcement can change in the status: the target and the
/// records.
type Announced = (
    Option<(BlueprintUuid, bool)>,
    Vec<(OmicronZoneUuid, Option<&'static str>, Option<BlueprintUuid>)>,
);

fn announced(status: &StatusJson) -> Announced {
    (
        status.target.as_ref().map(|t| (t.blueprint_id, t.enabled)),
        status
            .nexus
            .iter()
            .map(|n| (n.nexus_id, n.record, n.last_drained_blueprint_id))
            .collect(),
    )
}

/// Why the status could not be had.
enum Unseen {
    /// The database does not answer (a failover may be under way): the
    /// planner's line, naming the hosts tried.
    NotAnswering(String),
    /// Anything else, failing the command as it is.
    Failed(Failure),
}

impl From<Unseen> for Failure {
    fn from(unseen: Unseen) -> Failure {
        match unseen {
            Unseen::NotAnswering(line) => Failure::failed(format!("{line}.")),
            Unseen::Failed(failure) => failure,
        }
    }
}

/// The status, or why it cannot be had. Where the database does not
/// answer (a failover under way), the operator reads that and where it
/// was asked, not a driver's error.
async fn look(ds: &DataStore, hosts: &[String]) -> Result<StatusJson, Unseen> {
    gather(ds).await.map_err(|e| not_answering(e, hosts))
}

/// `e`, as an operator should read it: a connection that could not be
/// had or was lost (what a failover looks like from here) in the
/// planner's words, naming the hosts tried; anything else as it is.
fn not_answering(e: DbError, hosts: &[String]) -> Unseen {
    match &e {
        DbError::Connection {
            message,
            transient: true,
            ..
        }
        | DbError::Database {
            message,
            transient: true,
            ..
        } => Unseen::NotAnswering(baton_planner::database_not_answering(
            hosts, message,
        )),
        _ => Unseen::Failed(e.into()),
    }
}

async fn gather(ds: &DataStore) -> Result<StatusJson, DbError> {
    let target = match ds.target_blueprint().await {
        Ok((target, bp)) => Some((bp, target.enabled)),
        Err(DbError::NoTarget) => None,
        Err(e) => return Err(e),
    };
    let records = ds.records_list().await?;
    let Reports {
        readable: reports,
        unreadable,
    } = ds.reports_list().await?;
    let now = ds.database_now().await?;
    let facts = StatusFacts {
        target: target.as_ref().map(|(bp, enabled)| (bp, *enabled)),
        records: &records,
        reports: &reports,
        now,
        report_interval: baton_nexus::Periods::default().report,
    };
    let waiting_on = baton_planner::waiting_on(&facts);
    let blueprint = target.as_ref().map(|(bp, _)| bp);
    Ok(StatusJson {
        target: target.as_ref().map(|(bp, enabled)| TargetJson {
            blueprint_id: bp.id(),
            nexus_generation: bp.nexus_generation().get(),
            enabled: *enabled,
        }),
        generation_in_control: blueprint
            .and_then(|bp| generation_in_control(bp, &records))
            .map(|g| g.get()),
        nexus: nexus_rows(blueprint, &records, &reports, &unreadable, now),
        done: waiting_on.is_empty(),
        waiting_on,
    })
}

fn nexus_rows(
    blueprint: Option<&Blueprint>,
    records: &[NexusRecord],
    reports: &[StoredReport],
    unreadable: &[UnreadableReport],
    now: DateTime<Utc>,
) -> Vec<NexusJson> {
    let mut ids: BTreeSet<OmicronZoneUuid> =
        records.iter().map(|r| r.nexus_id).collect();
    if let Some(bp) = blueprint {
        ids.extend(bp.nexus_zones().map(|z| z.zone_id));
    }
    ids.into_iter()
        .map(|id| {
            let record = records.iter().find(|r| r.nexus_id == id);
            let report = reports.iter().find(|r| r.report.nexus_id == id);
            let zone = blueprint
                .and_then(|bp| bp.nexus_zones().find(|z| z.zone_id == id));
            let expunged = zone.is_some_and(|z| !z.disposition.is_in_service());
            let shown = baton_planner::shown(
                record.map(|r| r.state),
                expunged,
                report.map(|s| &s.report),
            );
            // Only a report nothing contradicts says what it holds.
            let r = match shown {
                Shown::Reported(r) => Some(r),
                _ => None,
            };
            let bad = unreadable.iter().find(|u| u.nexus_id == id);
            NexusJson {
                report_unreadable: bad.map(|u| u.reason.clone()),
                nexus_id: id,
                generation: zone.map(|z| z.nexus_generation.get()),
                record: record.map(|r| r.state.as_str()),
                phase: shown.label().map(str::to_owned),
                step: r.and_then(|r| r.state.step()),
                since: r.map(|r| r.since),
                reported_ago_ms: report
                    .map(|s| s.reported_at)
                    .or(bad.map(|u| u.reported_at))
                    .map(|at| {
                        u64::try_from((now - at).num_milliseconds())
                            .unwrap_or(0)
                    }),
                last_drained_blueprint_id: record
                    .and_then(|r| r.last_drained_blueprint_id)
                    .or(r.and_then(|r| r.last_drained_blueprint_id)),
                work_in_flight: r.map(|r| r.work_in_flight),
                oldest_work: r.and_then(|r| r.oldest_work.clone()),
                claims_held: r.map(|r| r.claims_held),
                oldest_claim: r.and_then(|r| r.oldest_claim.clone()),
            }
        })
        .collect()
}

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "NEXUS ID")]
    id: OmicronZoneUuid,
    #[tabled(rename = "GEN")]
    generation: String,
    #[tabled(rename = "RECORD")]
    record: &'static str,
    #[tabled(rename = "PHASE")]
    phase: String,
    #[tabled(rename = "REPORTED")]
    reported: String,
    #[tabled(rename = "WORK")]
    work: String,
    #[tabled(rename = "CLAIMS")]
    claims: String,
    #[tabled(rename = "OLDEST CLAIM")]
    oldest_claim: String,
}

fn render(status: &StatusJson) -> String {
    let dash = || "-".to_owned();
    let mut text = match &status.target {
        Some(t) => format!(
            "target: blueprint {} (nexus_generation {}, {}); generation in \
             control: {}",
            t.blueprint_id,
            t.nexus_generation,
            if t.enabled { "enabled" } else { "disabled" },
            status
                .generation_in_control
                .map_or("none".to_owned(), |g| g.to_string())
        ),
        None => "target: none".to_owned(),
    };
    let rows = status.nexus.iter().map(|n| Row {
        id: n.nexus_id,
        generation: n.generation.map_or_else(dash, |g| g.to_string()),
        record: n.record.unwrap_or("-"),
        phase: match (&n.phase, n.step, n.since) {
            (Some(phase), Some(step), Some(since)) => format!(
                "{phase} step {step} since {}",
                since.format("%H:%M:%S")
            ),
            (Some(phase), _, Some(since)) => {
                format!("{phase} since {}", since.format("%H:%M:%S"))
            }
            (Some(phase), _, None) => phase.clone(),
            (None, ..) if n.report_unreadable.is_some() => {
                "report unreadable".to_owned()
            }
            (None, ..) => "never reported".to_owned(),
        },
        reported: n
            .reported_ago_ms
            .map_or_else(dash, |ms| format!("{} ago", human_age(ms))),
        work: n.work_in_flight.map_or_else(dash, |w| w.to_string()),
        claims: n.claims_held.map_or_else(dash, |c| c.to_string()),
        oldest_claim: n.oldest_claim.as_ref().map_or_else(dash, |c| {
            format!("{} ({})", human_age(c.age_ms), c.op)
        }),
    });
    text.push('\n');
    text.push_str(&output::table(rows, "no Nexus zones and no records"));
    if status.waiting_on.is_empty() {
        text.push_str("\nwaiting on nothing: the handoff is done");
    } else {
        text.push_str("\nwaiting on:");
        for wait in &status.waiting_on {
            let what = serde_json::to_value(wait.waiting)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            text.push_str(&format!("\n  - {what}: {}", wait.reason));
        }
    }
    text
}
