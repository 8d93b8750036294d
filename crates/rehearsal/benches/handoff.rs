//! End-to-end handoff time in the Nexus lifecycle: a whole rehearsal with
//! real instances on a fresh throwaway server per run, timing only the
//! span from the last old Nexus marked quiesced to the first new Nexus
//! ready. The instances run at the demo's speed (retries every 10 to
//! 30 ms), which bounds how soon a waiting new Nexus notices.

use std::time::Duration;

use baton_dev_db::DevDb;
use baton_rehearsal::rehearsal::{RehearsalOptions, rehearse};
use baton_types::story::HandoffStory;
use criterion::Criterion;
use slog::{Logger, o};

fn handoff(c: &mut Criterion) {
    let log = Logger::root(slog::Discard, o!());
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let options = RehearsalOptions::default();
    let mut group = c.benchmark_group("lifecycle");
    // Each run is a whole rehearsal of about two seconds: few samples.
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.bench_function("handoff", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for run in 0..iters {
                let db = DevDb::builder()
                    .template_cache(env!("CARGO_TARGET_TMPDIR"))
                    .start(&log)
                    .expect("a throwaway PostgreSQL starts");
                let story = HandoffStory::new(588 + run);
                let rehearsal = rt
                    .block_on(rehearse(
                        &log,
                        &db.url(),
                        &story,
                        &options,
                        |_| {},
                    ))
                    .expect("the rehearsal completes");
                assert!(rehearsal.quiesced_before_active);
                total += rehearsal.handoff_time;
            }
            total
        })
    });
    group.finish();
}

criterion::criterion_group!(benches, handoff);
criterion::criterion_main!(benches);
