//! The claim loop on PostgreSQL: claim a batch of due no-op tasks and
//! complete each under its lease, for batch sizes 1, 10 and 100.
//!
//! Run with `cargo bench --bench claim`; it starts a throwaway PostgreSQL
//! cluster. Figures are on docs/benchmarks.md.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use citadel::core::merchant::NewMerchant;
use citadel::core::store::{ClaimRequest, Store};
use citadel::core::task::{TaskKind, TaskUpdate};
use citadel::postgres::PgStore;
use citadel::postgres::ephemeral::fresh_store;

/// Inserts `count` due no-op tasks of a merchant in one statement.
async fn insert_due(store: &PgStore, merchant: i64, count: u64) {
    sqlx::query(
        "INSERT INTO scheduled_tasks (merchant_id, kind, status, run_at, max_attempts)
         SELECT $1, 'retry_payment', 'pending', now() - interval '1 second', 5
         FROM generate_series(1, $2)",
    )
    .bind(merchant)
    .bind(i64::try_from(count).unwrap_or(i64::MAX))
    .execute(store.pool())
    .await
    .expect("inserting tasks");
}

/// Claims one batch and completes each task in its own transaction.
async fn claim_and_complete(store: &PgStore, request: &ClaimRequest) -> usize {
    let tasks = store.claim_tasks(request).await.expect("claiming");
    for task in &tasks {
        let lease = task.lease.as_ref().expect("a claimed task has a lease");
        let mut tx = store.begin().await.expect("beginning");
        let finished = tx
            .finish_task(lease, &TaskUpdate::Complete)
            .await
            .expect("finishing");
        assert!(finished, "the lease is the claimer's own");
        tx.commit().await.expect("committing");
    }
    tasks.len()
}

fn claim_loop(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let (store, _database) = runtime.block_on(fresh_store()).expect("a test database");
    let merchant = runtime
        .block_on(store.create_merchant(&NewMerchant::new("Bench", None)))
        .expect("a merchant")
        .id
        .get();

    let mut group = c.benchmark_group("claim_loop");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for batch in [1u32, 10, 100] {
        let request = ClaimRequest {
            worker_id: "bench".to_owned(),
            kinds: vec![TaskKind::retry_payment()],
            limit: batch,
            lease_duration: Duration::from_secs(300),
        };
        group.throughput(Throughput::Elements(u64::from(batch)));
        group.bench_with_input(
            BenchmarkId::from_parameter(batch),
            &request,
            |b, request| {
                b.iter_custom(|iterations| {
                    runtime.block_on(async {
                        insert_due(&store, merchant, iterations * u64::from(batch)).await;
                        let started = Instant::now();
                        for _ in 0..iterations {
                            let claimed = claim_and_complete(&store, request).await;
                            assert_eq!(claimed, batch as usize);
                        }
                        started.elapsed()
                    })
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, claim_loop);
criterion_main!(benches);
