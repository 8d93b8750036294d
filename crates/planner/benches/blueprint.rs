//! Parsing, validating and classifying blueprints of 3 to 3,200 sleds
//! (about fifteen zones per sled). Throughput is reported per zone for
//! validation and classification, so linear growth shows as a flat line,
//! and in bytes for parsing.

use std::hint::black_box;
use std::time::Duration;

use baton_types::parse_blueprint;
use baton_types::story::Fleet;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

const SLEDS: [usize; 4] = [3, 32, 320, 3_200];

fn pure(c: &mut Criterion) {
    let fleets: Vec<(usize, Fleet)> =
        SLEDS.iter().map(|&n| (n, Fleet::new(588, n))).collect();

    let mut group = c.benchmark_group("classify");
    for (sleds, fleet) in &fleets {
        group.throughput(Throughput::Elements(fleet.zones as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(sleds),
            fleet,
            |b, fleet| {
                b.iter(|| {
                    baton_planner::classify(
                        black_box(&fleet.blueprint),
                        fleet.executing,
                    )
                    .expect("the executing Nexus is in the fleet")
                })
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("validate");
    group.sampling_mode(SamplingMode::Flat);
    for (sleds, fleet) in &fleets {
        group.throughput(Throughput::Elements(fleet.zones as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(sleds),
            fleet,
            |b, fleet| {
                b.iter(|| {
                    black_box(&fleet.blueprint)
                        .validate()
                        .expect("a fleet is valid")
                })
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("parse");
    group.sampling_mode(SamplingMode::Flat);
    for (sleds, fleet) in &fleets {
        let document = fleet.blueprint.document();
        group.throughput(Throughput::Bytes(document.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(sleds),
            document,
            |b, document| {
                b.iter(|| {
                    parse_blueprint(black_box(document))
                        .expect("a rendered fleet parses")
                })
            },
        );
    }
    group.finish();
}

fn config() -> Criterion {
    // The largest fleet takes tens of milliseconds per parse: fewer,
    // flat samples keep the whole run to a minute.
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion::criterion_group! {
    name = benches;
    config = config();
    targets = pure
}
criterion::criterion_main!(benches);
