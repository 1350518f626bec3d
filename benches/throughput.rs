//! Throughput harness of the task engine against PostgreSQL's own ceiling.
//!
//! In one run it:
//!
//! 1. drains `--tasks` due no-op tasks with `--workers` workers (each a
//!    [`Worker`] with its heartbeat, rescue and wake-ups) and reports tasks/s;
//! 2. drains as many again with the same number of bare loops of the same
//!    claim and complete statements, with no engine around them: the
//!    ceiling. Each loop claims a batch, completes its tasks concurrently,
//!    and claims again;
//! 3. inserts `--wakeups` tasks one at a time, `--wakeup-gap-ms` apart, while
//!    the workers are idle with a poll interval of 5 seconds, and reports the
//!    time from each task becoming due to its handler starting (p50, p99);
//! 4. with `--churn-secs`, keeps inserting and draining tasks (and pruning
//!    completed ones) for that long and prints the dead tuples of
//!    `scheduled_tasks` every 10 seconds.
//!
//! `--pending-backlog` adds that many due tasks before each drain, and
//! `--future-backlog` that many tasks due in a day, so throughput can be
//! compared across backlogs. With a due backlog, a drain stops timing once
//! `--tasks` tasks are completed. Every flag can also be set by environment
//! variable (`CITADEL_BENCH_TASKS`, ...). Without `DATABASE_URL` the harness
//! starts a throwaway PostgreSQL cluster (fsync off).
//!
//! The run ends with one line:
//! `engine=<tasks/s> ceiling=<tasks/s> ratio=<r> p50_ms=<x> p99_ms=<y>`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

use citadel::core::engine::{EngineError, TaskResult};
use citadel::core::merchant::NewMerchant;
use citadel::core::queue::Retention;
use citadel::core::store::{ClaimRequest, Store};
use citadel::core::task::{Task, TaskKind, TaskUpdate};
use citadel::core::{TaskHandler, Wakeup, Worker, WorkerConfig, async_trait};
use citadel::postgres::PgStore;
use citadel::postgres::ephemeral::EphemeralPostgres;

/// Command-line flags; each has an environment variable.
#[derive(Debug, Parser)]
#[command(about = "Drains no-op tasks with the engine and with bare SQL loops")]
struct Flags {
    /// Tasks to drain in each measurement.
    #[arg(long, env = "CITADEL_BENCH_TASKS", default_value_t = 20_000)]
    tasks: u64,
    /// Workers (engine) and loops (ceiling) that drain at once.
    #[arg(long, env = "CITADEL_BENCH_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Tasks per claim.
    #[arg(long, env = "CITADEL_BENCH_BATCH", default_value_t = 100)]
    batch: u32,
    /// Extra due tasks inserted before each drain, left over afterwards.
    #[arg(long, env = "CITADEL_BENCH_PENDING_BACKLOG", default_value_t = 0)]
    pending_backlog: u64,
    /// Tasks due in a day, inserted before the drains.
    #[arg(long, env = "CITADEL_BENCH_FUTURE_BACKLOG", default_value_t = 0)]
    future_backlog: u64,
    /// Tasks inserted one at a time for the wake-up latency.
    #[arg(long, env = "CITADEL_BENCH_WAKEUPS", default_value_t = 200)]
    wakeups: u64,
    /// Milliseconds between two of those inserts.
    #[arg(long, env = "CITADEL_BENCH_WAKEUP_GAP_MS", default_value_t = 20)]
    wakeup_gap_ms: u64,
    /// Seconds of the churn run; 0 skips it.
    #[arg(long, env = "CITADEL_BENCH_CHURN_SECS", default_value_t = 0)]
    churn_secs: u64,
    /// Tasks inserted per second during the churn run.
    #[arg(long, env = "CITADEL_BENCH_CHURN_RATE", default_value_t = 2000)]
    churn_rate: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A handler that completes each task at once, recording how long after its
/// `run_at` it started.
struct NoOp {
    store: PgStore,
    latencies: Mutex<Vec<Duration>>,
    completed: Arc<AtomicI64>,
}

impl NoOp {
    fn new(store: &PgStore) -> Arc<Self> {
        Arc::new(Self {
            store: store.clone(),
            latencies: Mutex::new(Vec::new()),
            completed: Arc::new(AtomicI64::new(0)),
        })
    }
}

#[async_trait]
impl TaskHandler for NoOp {
    type Store = PgStore;

    fn store(&self) -> &PgStore {
        &self.store
    }

    fn kinds(&self) -> Vec<TaskKind> {
        vec![TaskKind::retry_payment()]
    }

    async fn handle(&self, task: &Task) -> Result<TaskResult, EngineError> {
        let late = (chrono::Utc::now() - task.run_at)
            .to_std()
            .unwrap_or_default();
        self.latencies.lock().expect("not poisoned").push(late);
        complete(&self.store, task, &self.completed).await
    }
}

/// Completes a claimed task under its lease, as a handler does, and counts
/// it in `completed`.
async fn complete(
    store: &PgStore,
    task: &Task,
    completed: &AtomicI64,
) -> Result<TaskResult, EngineError> {
    let lease = task.lease.as_ref().expect("a claimed task has a lease");
    let mut tx = store.begin().await?;
    if !tx.finish_task(lease, &TaskUpdate::Complete).await? {
        return Ok(TaskResult::LeaseLost);
    }
    tx.commit().await?;
    completed.fetch_add(1, Ordering::Relaxed);
    Ok(TaskResult::Completed)
}

async fn insert(store: &PgStore, merchant: i64, count: u64, due_in_secs: i64) {
    sqlx::query(
        "INSERT INTO scheduled_tasks (merchant_id, kind, status, run_at, max_attempts)
         SELECT $1, 'retry_payment', 'pending', now() + make_interval(secs => $3), 5
         FROM generate_series(1, $2)",
    )
    .bind(merchant)
    .bind(i64::try_from(count).unwrap_or(i64::MAX))
    .bind(due_in_secs as f64)
    .execute(store.pool())
    .await
    .expect("inserting tasks");
}

/// Waits until `completed` reaches `target`; returns when that happened.
/// The count is kept in memory, so that waiting reads nothing from the
/// database.
async fn wait_for_completed(completed: &AtomicI64, target: i64) -> Instant {
    while completed.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Instant::now()
}

/// Clears the queue between measurements.
async fn reset(store: &PgStore) {
    sqlx::query("TRUNCATE scheduled_tasks")
        .execute(store.pool())
        .await
        .expect("truncating");
    sqlx::query("VACUUM ANALYZE scheduled_tasks")
        .execute(store.pool())
        .await
        .expect("vacuuming");
}

fn worker_config(flags: &Flags, poll_interval: Duration) -> WorkerConfig {
    WorkerConfig {
        name: "bench".to_owned(),
        batch_size: flags.batch,
        concurrency: flags.batch as usize,
        poll_interval,
        wakeup: Wakeup::Notify,
        ..WorkerConfig::default()
    }
}

/// Workers running until `stop` is set.
fn start_workers(
    handler: &Arc<NoOp>,
    config: &WorkerConfig,
    count: usize,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinSet<()>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..count {
        let worker = Worker::new(Arc::clone(handler), config.clone());
        let mut stopped = stopped.clone();
        workers.spawn(async move {
            worker
                .run(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await;
        });
    }
    (stop, workers)
}

async fn prepare(store: &PgStore, merchant: i64, flags: &Flags) {
    reset(store).await;
    insert(store, merchant, flags.future_backlog, 86_400).await;
    insert(store, merchant, flags.tasks + flags.pending_backlog, -1).await;
    // Vacuum the fresh rows now, so that autovacuum does not run during the
    // timed drain.
    sqlx::query("VACUUM ANALYZE scheduled_tasks")
        .execute(store.pool())
        .await
        .expect("vacuuming");
}

async fn engine_rate(store: &PgStore, handler: &Arc<NoOp>, merchant: i64, flags: &Flags) -> f64 {
    prepare(store, merchant, flags).await;
    let config = worker_config(flags, Duration::from_secs(1));
    let started = Instant::now();
    let (stop, mut workers) = start_workers(handler, &config, flags.workers);
    let target = i64::try_from(flags.tasks).unwrap_or(i64::MAX);
    let done = wait_for_completed(
        &handler.completed,
        handler.completed.load(Ordering::Relaxed) + target,
    )
    .await;
    stop.send(true).expect("workers listen");
    while workers.join_next().await.is_some() {}
    flags.tasks as f64 / (done - started).as_secs_f64()
}

async fn ceiling_rate(store: &PgStore, merchant: i64, flags: &Flags) -> f64 {
    prepare(store, merchant, flags).await;
    let target = i64::try_from(flags.tasks).unwrap_or(i64::MAX);
    let completed = Arc::new(AtomicI64::new(0));
    let started = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for n in 0..flags.workers {
        let store = store.clone();
        let completed = Arc::clone(&completed);
        let request = ClaimRequest {
            worker_id: format!("ceiling-{n}"),
            kinds: vec![TaskKind::retry_payment()],
            limit: flags.batch,
            lease_duration: Duration::from_secs(300),
        };
        // Each loop completes its batch concurrently, as a worker does.
        loops.spawn(async move {
            loop {
                let tasks = store.claim_tasks(&request).await.expect("claiming");
                if tasks.is_empty() {
                    return;
                }
                let mut completing = tokio::task::JoinSet::new();
                for task in tasks {
                    let store = store.clone();
                    let completed = Arc::clone(&completed);
                    completing.spawn(async move { complete(&store, &task, &completed).await });
                }
                while let Some(done) = completing.join_next().await {
                    done.expect("not panicked").expect("completing");
                }
            }
        });
    }
    let done = wait_for_completed(&completed, target).await;
    loops.abort_all();
    while loops.join_next().await.is_some() {}
    flags.tasks as f64 / (done - started).as_secs_f64()
}

/// Returns the p50 and p99 wake-up latency in milliseconds.
async fn wakeup_latency(store: &PgStore, merchant: i64, flags: &Flags) -> (f64, f64) {
    reset(store).await;
    let handler = NoOp::new(store);
    let config = worker_config(flags, Duration::from_secs(5));
    let (stop, mut workers) = start_workers(&handler, &config, flags.workers);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..flags.wakeups {
        insert(store, merchant, 1, 0).await;
        tokio::time::sleep(Duration::from_millis(flags.wakeup_gap_ms)).await;
    }
    wait_for_completed(
        &handler.completed,
        i64::try_from(flags.wakeups).unwrap_or(i64::MAX),
    )
    .await;
    stop.send(true).expect("workers listen");
    while workers.join_next().await.is_some() {}

    let mut latencies = handler.latencies.lock().expect("not poisoned").clone();
    latencies.sort();
    let at = |per_mille: usize| {
        let index = latencies.len().saturating_sub(1) * per_mille / 1000;
        latencies
            .get(index)
            .map_or(f64::NAN, |late| late.as_secs_f64() * 1000.0)
    };
    (at(500), at(990))
}

async fn churn(store: &PgStore, merchant: i64, flags: &Flags) {
    reset(store).await;
    let handler = NoOp::new(store);
    let config = worker_config(flags, Duration::from_millis(200));
    let (stop, mut workers) = start_workers(&handler, &config, flags.workers);
    let retention = Retention {
        finished_tasks: Duration::from_secs(10),
        ..Retention::default()
    };
    println!("churn: seconds live_tuples dead_tuples autovacuum_count pending completed_kept");
    let started = Instant::now();
    let mut next_report = 0;
    while started.elapsed() < Duration::from_secs(flags.churn_secs) {
        insert(store, merchant, flags.churn_rate / 10, -1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seconds = started.elapsed().as_secs();
        if seconds >= next_report {
            next_report += 10;
            store.prune(&retention).await.expect("pruning");
            let (live, dead, vacuums): (i64, i64, i64) = sqlx::query_as(
                "SELECT n_live_tup, n_dead_tup, autovacuum_count
                 FROM pg_stat_user_tables WHERE relname = 'scheduled_tasks'",
            )
            .fetch_one(store.pool())
            .await
            .expect("reading table statistics");
            let counts = store.task_counts().await.expect("counting tasks");
            println!(
                "churn: {seconds} {live} {dead} {vacuums} {} {}",
                counts.pending, counts.completed
            );
        }
    }
    stop.send(true).expect("workers listen");
    while workers.join_next().await.is_some() {}
}

#[tokio::main]
async fn main() {
    let flags = Flags::parse();
    let cluster;
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            cluster = EphemeralPostgres::start().expect("starting PostgreSQL");
            cluster
                .create_database("bench")
                .await
                .expect("creating the database")
        }
    };
    let store = PgStore::connect(&url).await.expect("connecting");
    store.migrate().await.expect("migrating");
    let merchant = store
        .create_merchant(&NewMerchant::new("Bench", None))
        .await
        .expect("creating a merchant")
        .id
        .get();
    println!("flags: {flags:?}");

    let handler = NoOp::new(&store);
    let engine = engine_rate(&store, &handler, merchant, &flags).await;
    println!("engine: {engine:.0} tasks/s");
    let ceiling = ceiling_rate(&store, merchant, &flags).await;
    println!("ceiling: {ceiling:.0} tasks/s");
    let (p50, p99) = wakeup_latency(&store, merchant, &flags).await;
    println!("wake-up: p50 {p50:.1} ms, p99 {p99:.1} ms");
    if flags.churn_secs > 0 {
        churn(&store, merchant, &flags).await;
    }
    println!(
        "engine={engine:.0} ceiling={ceiling:.0} ratio={:.2} p50_ms={p50:.1} p99_ms={p99:.1}",
        engine / ceiling
    );
}
