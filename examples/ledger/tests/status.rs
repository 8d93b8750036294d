//! `baton status --json` during a real handoff of `baton-ledger`
//! processes: it names the old instance a long job holds up, its quiesce
//! step and the job's age, then shows the handoff done.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use baton_types::story::HandoffStory;
use serde_json::Value;

use crate::handoff::{
    Ledger, PATIENCE, count, deploy_generation_2, import, rack_at_generation_1,
    runtime,
};

/// The `baton` binary, built beside `baton-ledger` (a workspace test
/// run builds every binary); built here if it is not.
fn baton() -> PathBuf {
    let ledger = PathBuf::from(env!("CARGO_BIN_EXE_baton-ledger"));
    let baton = ledger.with_file_name("baton");
    if !baton.exists() {
        let built = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--package",
                "baton-cli",
                "--bin",
                "baton",
            ])
            .status()
            .expect("cargo runs");
        assert!(built.success(), "cannot build the baton binary");
    }
    baton
}

fn status(baton: &PathBuf, url: &str) -> Value {
    let out = Command::new(baton)
        .args(["status", "--json"])
        .env("BATON_DATABASE_URL", url)
        .stdin(Stdio::null())
        .output()
        .expect("baton runs");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// Polls `baton status --json` until `found` picks something out of it.
fn poll<T>(
    baton: &PathBuf,
    url: &str,
    what: &str,
    found: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = status(baton, url);
        if let Some(answer) = found(&now) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}; the last status: {now:#}"
        );
    }
}

#[test]
fn status_names_the_instance_a_long_job_holds_up_then_the_handoff_done() {
    let baton = baton();
    let rt = runtime();
    let story = HandoffStory::new(5);
    let (_db, url, ds) = rack_at_generation_1(&rt, &story);
    // Jobs of three seconds, one after another: an old instance always
    // has one in flight when the bump comes.
    let long = ["--job-ms", "3000"];
    let mut old: Vec<Ledger> = story
        .old_nexus
        .iter()
        .map(|id| Ledger::spawn_with(&url, *id, 1, None, &long))
        .collect();
    for ledger in &mut old {
        ledger.wait_state("running");
    }
    let mut new = deploy_generation_2(&rt, &ds, &story, &url);
    rt.block_on(import(&ds, &story.handoff_started));

    // While an old instance drains its job (quiesce step 2), status
    // names it, its step, the job and the job's age.
    let old_ids: Vec<String> =
        story.old_nexus.iter().map(ToString::to_string).collect();
    let (id, age_ms) = poll(&baton, &url, "an old Nexus in step 2", |s| {
        s["nexus"].as_array()?.iter().find_map(|n| {
            let id = n["nexus_id"].as_str()?;
            let held = n["oldest_work"]["age_ms"].as_u64()?;
            (old_ids.iter().any(|o| o == id)
                && n["phase"] == "quiescing"
                && n["step"] == 2
                && n["oldest_work"]["op"] == "ledger job"
                && n["work_in_flight"].as_u64()? >= 1
                && s["waiting_on"].as_array()?.iter().any(|w| {
                    w["nexus_id"] == id
                        && w["waiting"] == "handoff"
                        && w["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains("quiesce step 2"))
                }))
            .then(|| (id.to_owned(), held))
        })
    });
    assert!(age_ms > 0, "{id}: the job's age");

    // Then the handoff is done: generation 2 in control, nothing waits
    // on the handoff.
    poll(&baton, &url, "the handoff done", |s| {
        (s["generation_in_control"] == 2
            && s["waiting_on"]
                .as_array()?
                .iter()
                .all(|w| w["waiting"] != "handoff"))
        .then_some(())
    });
    for ledger in &mut old {
        ledger.wait_state("quiesced");
    }
    for ledger in &mut new {
        ledger.wait_state("running");
    }
    // Reports stop before the mark: each old instance's last report
    // committed before its `quiesced` record did (the server's commit
    // timestamps), and every one of them did report.
    rt.block_on(async {
        let reported = count(
            &ds,
            "SELECT count(*) AS n FROM baton_nexus_report r \
             JOIN db_metadata_nexus m USING (nexus_id) \
             WHERE m.state = 'quiesced' \
             AND pg_xact_commit_timestamp(r.xmin) \
                 < pg_xact_commit_timestamp(m.xmin)",
        )
        .await;
        assert_eq!(reported, 3, "a report after the quiesced mark");
    });
}
