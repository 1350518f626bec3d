//! CPU cost of webhook intake before the database: signature check and
//! event parsing of a sample `invoice.payment_failed` event (about 6 KB).
//!
//! Run with `cargo bench --bench intake`; figures are on docs/benchmarks.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use citadel::core::Secret;
use citadel::stripe::event::parse_event;
use citadel::stripe::webhook::{WebhookVerifier, sign};

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/events/01-soft-decline-payment-failed.json"
);

fn intake(c: &mut Criterion) {
    let body = std::fs::read(SAMPLE).expect("the sample event exists");
    let secret = Secret::new("whsec_bench");
    let verifier = WebhookVerifier::new([secret.clone()]).expect("a non-empty secret");
    let header = sign(&body, &secret, chrono::Utc::now().timestamp());
    let bytes = u64::try_from(body.len()).unwrap_or(u64::MAX);

    let mut group = c.benchmark_group("webhook");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("verify", |b| {
        b.iter(|| verifier.verify(black_box(&body), black_box(&header)))
    });
    group.bench_function("parse", |b| b.iter(|| parse_event(black_box(&body))));
    group.bench_function("verify_and_parse", |b| {
        b.iter(|| verifier.verify_and_parse(black_box(&body), black_box(&header)))
    });
    group.finish();
}

criterion_group!(benches, intake);
criterion_main!(benches);
