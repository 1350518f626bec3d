//! Tests of the task engine under real concurrency: exactly-once runs,
//! rescue, fairness, shutdown, crashes of workers and of PostgreSQL.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use citadel_core::activity::{ActivityKind, NewActivity};
use citadel_core::engine::{EngineError, TaskResult};
use citadel_core::ids::{MerchantId, TaskId};
use citadel_core::queue::Retention;
use citadel_core::store::Store;
use citadel_core::task::{Task, TaskKind, TaskStatus, TaskUpdate};
use citadel_core::worker::BatchReport;
use citadel_core::{TaskHandler, Wakeup, Worker, WorkerConfig};
use citadel_postgres::PgStore;
use citadel_postgres::ephemeral::EphemeralPostgres;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::{claim_request, count, due_task, insert_tasks, register, setup};

/// The environment variable that makes [`worker_child_process`] run as a
/// worker on the database at its URL.
const CHILD_DATABASE_URL: &str = "CITADEL_TEST_CHILD_DATABASE_URL";

/// A handler that counts its calls per task and completes each task with one
/// ledger row, in one transaction under the task's lease. The ledger rows
/// are the effects that must be committed exactly once.
struct Recorder {
    store: PgStore,
    calls: Mutex<HashMap<TaskId, u32>>,
    delay: Duration,
}

impl Recorder {
    fn new(store: PgStore, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            calls: Mutex::new(HashMap::new()),
            delay,
        })
    }

    fn calls(&self) -> HashMap<TaskId, u32> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl TaskHandler for Recorder {
    type Store = PgStore;

    fn store(&self) -> &PgStore {
        &self.store
    }

    fn kinds(&self) -> Vec<TaskKind> {
        vec![TaskKind::retry_payment()]
    }

    async fn handle(&self, task: &Task) -> Result<TaskResult, EngineError> {
        *self.calls.lock().unwrap().entry(task.id).or_default() += 1;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        complete_with_effect(&self.store, task).await
    }
}

/// Writes the task's ledger row and completes it under its lease, in one
/// transaction; writes nothing when the lease was lost.
async fn complete_with_effect(store: &PgStore, task: &Task) -> Result<TaskResult, EngineError> {
    let lease = task.lease.as_ref().expect("a claimed task has a lease");
    let mut tx = store.begin().await?;
    let mut effect = NewActivity::new(task.merchant_id, ActivityKind::RetrySkipped, "test run");
    effect.task_id = Some(task.id);
    tx.insert_activity(&effect).await?;
    if !tx.finish_task(lease, &TaskUpdate::Complete).await? {
        return Ok(TaskResult::LeaseLost);
    }
    tx.commit().await?;
    Ok(TaskResult::Completed)
}

/// Inserts `count` due tasks of a merchant in one statement.
async fn insert_due_tasks(store: &PgStore, merchant: MerchantId, count: i64) {
    sqlx::query(
        "INSERT INTO scheduled_tasks (merchant_id, kind, status, run_at, max_attempts)
         SELECT $1, 'retry_payment', 'pending', now() - interval '1 minute', 5
         FROM generate_series(1, $2)",
    )
    .bind(merchant.get())
    .bind(count)
    .execute(store.pool())
    .await
    .unwrap();
}

/// Counts the connections to the test database that last ran LISTEN.
const LISTENERS: &str = "SELECT count(*) FROM pg_stat_activity
     WHERE datname = current_database() AND query ILIKE 'LISTEN%'";

/// Settings for fast tests: short leases, frequent rescue and polls.
fn fast_config(name: &str) -> WorkerConfig {
    WorkerConfig {
        name: name.to_owned(),
        batch_size: 50,
        concurrency: 50,
        lease_duration: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(500),
        rescue_interval: Duration::from_millis(300),
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
}

/// Workers started with [`Worker::run`], stopped together.
struct Fleet {
    stop: watch::Sender<bool>,
    workers: JoinSet<BatchReport>,
}

impl Fleet {
    fn start<H: TaskHandler>(handler: &Arc<H>, configs: Vec<WorkerConfig>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut workers = JoinSet::new();
        for config in configs {
            let worker = Worker::new(Arc::clone(handler), config);
            let mut stopped = stopped.clone();
            workers.spawn(async move {
                let signal = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                worker.run(signal).await
            });
        }
        Self { stop, workers }
    }

    async fn stop(mut self) -> Vec<BatchReport> {
        self.stop.send(true).unwrap();
        let mut reports = Vec::new();
        while let Some(report) = self.workers.join_next().await {
            reports.push(report.unwrap());
        }
        reports
    }
}

/// Waits until no task is pending or running, at most `limit`.
async fn wait_until_drained(store: &PgStore, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let counts = store.task_counts().await.unwrap();
        if counts.pending == 0 && counts.running == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tasks not drained after {limit:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until at least `target` tasks are completed, at most `limit`.
async fn wait_until_completed(store: &PgStore, target: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while store.task_counts().await.unwrap().completed < target {
        assert!(
            Instant::now() < deadline,
            "fewer than {target} tasks completed after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that every task is completed and has exactly one ledger row.
async fn assert_each_effect_once(store: &PgStore, tasks: i64) {
    let counts = store.task_counts().await.unwrap();
    assert_eq!(counts.completed, tasks, "{counts:?}");
    assert_eq!(
        counts.pending + counts.running + counts.failed,
        0,
        "{counts:?}"
    );
    let repeated = count(
        store,
        "SELECT count(*) FROM (SELECT task_id FROM usage_logs GROUP BY task_id HAVING count(*) > 1) r",
    )
    .await;
    assert_eq!(repeated, 0, "tasks whose effect was committed twice");
    let effects = count(store, "SELECT count(DISTINCT task_id) FROM usage_logs").await;
    assert_eq!(effects, tasks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_workers_run_each_task_once() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    insert_due_tasks(&store, merchant.id, 20_000).await;
    let recorder = Recorder::new(store.clone(), Duration::ZERO);

    let configs = (0..8)
        .map(|n| fast_config(&format!("worker-{n}")))
        .collect();
    let fleet = Fleet::start(&recorder, configs);
    wait_until_drained(&store, Duration::from_secs(300)).await;
    let reports = fleet.stop().await;

    let calls = recorder.calls();
    assert_eq!(calls.len(), 20_000);
    let repeated: Vec<_> = calls.iter().filter(|(_, calls)| **calls != 1).collect();
    assert!(
        repeated.is_empty(),
        "handlers run more than once: {repeated:?}"
    );
    assert_each_effect_once(&store, 20_000).await;
    let claimed: usize = reports.iter().map(|report| report.claimed).sum();
    assert_eq!(claimed, 20_000);
    assert!(
        reports.iter().filter(|report| report.claimed > 0).count() > 1,
        "{reports:?}"
    );
}

/// A handler that never finishes, standing in for a worker that hangs or
/// dies mid-task.
struct Stall {
    store: PgStore,
    started: Notify,
}

#[async_trait]
impl TaskHandler for Stall {
    type Store = PgStore;

    fn store(&self) -> &PgStore {
        &self.store
    }

    fn kinds(&self) -> Vec<TaskKind> {
        vec![TaskKind::retry_payment()]
    }

    async fn handle(&self, _task: &Task) -> Result<TaskResult, EngineError> {
        self.started.notify_one();
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_worker_task_is_rescued_once() {
    let (store, db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let ids = insert_tasks(&store, &[due_task(merchant.id, "a")]).await;

    // The doomed worker has a pool of its own, so that its connections can
    // be killed without touching the test's.
    let doomed_store = PgStore::connect(db.url()).await.unwrap();
    let stall = Arc::new(Stall {
        store: doomed_store.clone(),
        started: Notify::new(),
    });
    let doomed = Worker::new(Arc::clone(&stall), fast_config("doomed"));
    let doomed_id = doomed.id();
    let running = tokio::spawn(async move { doomed.run(std::future::pending()).await });
    stall.started.notified().await;
    let stale = store.task(ids[0]).await.unwrap().unwrap().lease.unwrap();
    assert_eq!(stale.owner, doomed_id.to_string());

    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(killed > 0, "the doomed worker had open connections");

    let recorder = Recorder::new(store.clone(), Duration::ZERO);
    let fleet = Fleet::start(&recorder, vec![fast_config("rescuer")]);
    wait_until_drained(&store, Duration::from_secs(30)).await;
    fleet.stop().await;

    assert_eq!(recorder.calls().get(&ids[0]), Some(&1));
    let task = store.task(ids[0]).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.attempts, 2);
    assert_each_effect_once(&store, 1).await;

    let late = complete_with_effect(
        &store,
        &Task {
            lease: Some(stale),
            ..task
        },
    )
    .await;
    assert!(matches!(late, Ok(TaskResult::LeaseLost)), "{late:?}");
    assert_each_effect_once(&store, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescue_waits_and_keeps_completed_task() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    insert_tasks(&store, &[due_task(merchant.id, "a")]).await;
    let mut expired = claim_request("slow-worker", 1);
    expired.lease_duration = Duration::ZERO;
    let task = store.claim_tasks(&expired).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_millis(20)).await;

    // The rescuer reads the expired lease...
    let candidates = store.expired_leases().await.unwrap();
    assert_eq!(candidates, vec![task.id]);

    // ...the late worker finishes the task and holds the row until commit...
    let mut tx = store.begin().await.unwrap();
    let finished = tx
        .finish_task(task.lease.as_ref().unwrap(), &TaskUpdate::Complete)
        .await
        .unwrap();
    assert!(finished, "an expired but unrescued lease still writes");
    let rescuer = {
        let store = store.clone();
        tokio::spawn(async move { store.rescue(&candidates).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!rescuer.is_finished(), "the rescue waits for the row lock");

    // ...and the rescuer's write, checked again after the commit, changes
    // nothing.
    tx.commit().await.unwrap();
    let rescued = rescuer.await.unwrap().unwrap();
    assert_eq!(rescued, 0);
    let task = store.task(task.id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    assert!(task.lease.is_none());
}

#[tokio::test]
async fn rescue_after_commit_keeps_completed_task() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    insert_tasks(&store, &[due_task(merchant.id, "a")]).await;
    let mut expired = claim_request("slow-worker", 1);
    expired.lease_duration = Duration::ZERO;
    let task = store.claim_tasks(&expired).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let candidates = store.expired_leases().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    tx.finish_task(task.lease.as_ref().unwrap(), &TaskUpdate::Complete)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(store.rescue(&candidates).await.unwrap(), 0);
    let task = store.task(task.id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
}

#[tokio::test]
async fn single_task_beside_backlog_claimed_first_batch() {
    let (store, _db) = setup().await;
    let busy = register(&store, "acct_busy").await;
    let quiet = register(&store, "acct_quiet").await;
    insert_due_tasks(&store, busy.id, 100_000).await;
    let single = insert_tasks(&store, &[due_task(quiet.id, "single")]).await;
    sqlx::query("ANALYZE scheduled_tasks")
        .execute(store.pool())
        .await
        .unwrap();

    let batch = store.claim_tasks(&claim_request("w", 100)).await.unwrap();
    let next = store.claim_tasks(&claim_request("w", 100)).await.unwrap();

    assert!(
        batch.iter().any(|task| task.id == single[0]),
        "the quiet merchant's task is in the first batch"
    );
    let busy_count = batch
        .iter()
        .filter(|task| task.merchant_id == busy.id)
        .count();
    assert_eq!(busy_count, 50, "each merchant's share is half the batch");
    assert_eq!(
        next.len(),
        100,
        "the busy merchant alone gets the whole next batch"
    );
}

#[tokio::test]
async fn claim_alternates_merchants_at_batch_one() {
    let (store, _db) = setup().await;
    let busy = register(&store, "acct_busy").await;
    let quiet = register(&store, "acct_quiet").await;
    insert_due_tasks(&store, busy.id, 1000).await;
    let single = insert_tasks(&store, &[due_task(quiet.id, "single")]).await;

    let first = store.claim_tasks(&claim_request("w", 1)).await.unwrap();
    let second = store.claim_tasks(&claim_request("w", 1)).await.unwrap();

    assert_eq!(first[0].merchant_id, busy.id, "the older head goes first");
    assert_eq!(
        second[0].id, single[0],
        "a merchant with nothing running goes next"
    );
}

#[tokio::test]
async fn claim_respects_merchant_running_limit() {
    let (store, _db) = setup().await;
    let limited = register(&store, "acct_limited").await;
    sqlx::query("UPDATE merchants SET max_running_tasks = 2 WHERE id = $1")
        .bind(limited.id.get())
        .execute(store.pool())
        .await
        .unwrap();
    insert_due_tasks(&store, limited.id, 10).await;

    let first = store.claim_tasks(&claim_request("w", 10)).await.unwrap();
    let second = store.claim_tasks(&claim_request("w", 10)).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(second.is_empty());

    let mut tx = store.begin().await.unwrap();
    tx.finish_task(first[0].lease.as_ref().unwrap(), &TaskUpdate::Complete)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let third = store.claim_tasks(&claim_request("w", 10)).await.unwrap();
    assert_eq!(third.len(), 1);
}

#[tokio::test]
async fn claim_takes_higher_priority_first() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let old = due_task(merchant.id, "old");
    let mut urgent = due_task(merchant.id, "urgent");
    urgent.priority = 5;
    urgent.run_at = old.run_at + chrono::Duration::seconds(30);
    let ids = insert_tasks(&store, &[old, urgent]).await;

    let batch = store.claim_tasks(&claim_request("w", 1)).await.unwrap();

    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].id, ids[1]);
    assert_eq!(batch[0].priority, 5);
}

#[tokio::test]
async fn claim_passes_future_task_of_higher_priority() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let mut later = due_task(merchant.id, "later");
    later.priority = 7;
    later.run_at = chrono::Utc::now() + chrono::Duration::hours(1);
    let due = due_task(merchant.id, "due");
    let ids = insert_tasks(&store, &[later, due]).await;

    let batch = store.claim_tasks(&claim_request("w", 10)).await.unwrap();

    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].id, ids[1]);
}

#[tokio::test]
async fn priority_outside_levels_is_rejected() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let mut task = due_task(merchant.id, "too-urgent");
    task.priority = 10;

    let mut tx = store.begin().await.unwrap();
    let inserted = tx.insert_task(&task).await;

    assert!(inserted.is_err(), "{inserted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_stops_while_database_is_down() {
    let cluster = EphemeralPostgres::start().unwrap();
    let url = cluster.create_database("down_test").await.unwrap();
    let store = PgStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let recorder = Recorder::new(store.clone(), Duration::from_millis(1));
    let fleet = Fleet::start(&recorder, vec![fast_config("orphan")]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Dropping the cluster stops PostgreSQL; the worker's claims now fail.
    tokio::task::block_in_place(|| drop(cluster));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(120), fleet.stop()).await;

    assert!(
        stopped.is_ok(),
        "the worker kept running after shutdown while the database was down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_running_and_releases_rest() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    insert_due_tasks(&store, merchant.id, 10).await;
    let recorder = Recorder::new(store.clone(), Duration::from_millis(500));
    let config = WorkerConfig {
        batch_size: 10,
        concurrency: 2,
        ..fast_config("stopping")
    };
    let fleet = Fleet::start(&recorder, vec![config]);
    while recorder.calls().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let reports = fleet.stop().await;

    let counts = store.task_counts().await.unwrap();
    assert_eq!(counts.completed, 2, "{counts:?}");
    assert_eq!(counts.pending, 8, "{counts:?}");
    assert_eq!(counts.running, 0, "{counts:?}");
    assert_eq!(reports[0].released, 8);
    let refunded = count(
        &store,
        "SELECT count(*) FROM scheduled_tasks
         WHERE status = 'pending' AND attempts = 0 AND lease_token IS NULL AND run_at <= now()",
    )
    .await;
    assert_eq!(
        refunded, 8,
        "released tasks are due with their attempt given back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_registers_and_stops() {
    let (store, _db) = setup().await;
    let recorder = Recorder::new(store.clone(), Duration::ZERO);
    let config = WorkerConfig {
        heartbeat_interval: Duration::from_millis(50),
        ..fast_config("worker-a")
    };
    let fleet = Fleet::start(&recorder, vec![config.clone(), config]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let running = store.list_workers().await.unwrap();
    assert_eq!(running.len(), 2);
    assert_ne!(running[0].id, running[1].id, "each start gets its own id");
    for worker in &running {
        assert_eq!(worker.name, "worker-a");
        assert!(worker.stopped_at.is_none());
        assert!(worker.heartbeat_at > worker.started_at, "{worker:?}");
    }
    fleet.stop().await;

    let stopped = store.list_workers().await.unwrap();
    assert!(
        stopped.iter().all(|worker| worker.stopped_at.is_some()),
        "{stopped:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_long_task_leased() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let ids = insert_tasks(&store, &[due_task(merchant.id, "slow")]).await;
    let recorder = Recorder::new(store.clone(), Duration::from_millis(2500));
    let slow = WorkerConfig {
        lease_duration: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(200),
        ..fast_config("slow")
    };
    let idle_rescuer = Recorder::new(store.clone(), Duration::ZERO);
    let fleet = Fleet::start(&recorder, vec![slow]);
    while recorder.calls().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rescuers = Fleet::start(&idle_rescuer, vec![fast_config("rescuer")]);
    wait_until_drained(&store, Duration::from_secs(30)).await;
    fleet.stop().await;
    rescuers.stop().await;

    assert_eq!(recorder.calls().get(&ids[0]), Some(&1));
    assert!(
        idle_rescuer.calls().is_empty(),
        "the task was never rescued"
    );
    let task = store.task(ids[0]).await.unwrap().unwrap();
    assert_eq!(task.attempts, 1);
    assert_each_effect_once(&store, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_idle_worker() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let recorder = Recorder::new(store.clone(), Duration::ZERO);
    let config = WorkerConfig {
        poll_interval: Duration::from_secs(60),
        ..fast_config("listener")
    };
    let fleet = Fleet::start(&recorder, vec![config]);
    // Let the worker finish its first, empty claim and start waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&store, LISTENERS).await, 1);

    insert_tasks(&store, &[due_task(merchant.id, "a")]).await;
    wait_until_completed(&store, 1, Duration::from_secs(10)).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_only_worker_runs_tasks() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let recorder = Recorder::new(store.clone(), Duration::ZERO);
    let config = WorkerConfig {
        wakeup: Wakeup::PollOnly,
        ..fast_config("poller")
    };
    let fleet = Fleet::start(&recorder, vec![config]);
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(count(&store, LISTENERS).await, 0);
    insert_tasks(&store, &[due_task(merchant.id, "a")]).await;
    wait_until_completed(&store, 1, Duration::from_secs(10)).await;
    fleet.stop().await;
}

#[tokio::test]
async fn prune_deletes_old_finished_rows_in_batches() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    sqlx::query(
        "INSERT INTO scheduled_tasks (merchant_id, kind, status, run_at, max_attempts, updated_at)
         SELECT $1, 'retry_payment', s.status, now(), 5, now() - s.age
         FROM (VALUES ('completed', interval '10 days'), ('cancelled', interval '10 days'),
                      ('failed', interval '10 days'), ('completed', interval '1 hour'),
                      ('pending', interval '10 days')) AS s (status, age),
              generate_series(1, 5)",
    )
    .bind(merchant.id.get())
    .execute(store.pool())
    .await
    .unwrap();
    let retention = Retention {
        finished_tasks: Duration::from_secs(24 * 60 * 60),
        batch_size: 2,
        ..Retention::default()
    };

    let report = store.prune(&retention).await.unwrap();

    assert_eq!(report.tasks, 10);
    let counts = store.task_counts().await.unwrap();
    assert_eq!(counts.completed, 5);
    assert_eq!(counts.cancelled, 0);
    assert_eq!(counts.failed, 5);
    assert_eq!(counts.pending, 5);
}

/// Runs as one worker process of [`separate_processes_survive_sigkill`] when
/// [`CHILD_DATABASE_URL`] is set; it is ignored otherwise, and that test
/// starts it with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs only as a child process of separate_processes_survive_sigkill"]
async fn worker_child_process() {
    let url = std::env::var(CHILD_DATABASE_URL).expect("started by the parent test");
    let store = PgStore::connect(&url).await.unwrap();
    let recorder = Recorder::new(store.clone(), Duration::from_millis(2));
    let fleet = Fleet::start(&recorder, vec![fast_config("child")]);
    wait_until_drained(&store, Duration::from_secs(120)).await;
    fleet.stop().await;
}

fn spawn_child(url: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["engine::worker_child_process", "--exact", "--ignored"])
        .env(CHILD_DATABASE_URL, url)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_survive_sigkill() {
    let (store, db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    insert_due_tasks(&store, merchant.id, 3000).await;

    let mut children: Vec<Child> = (0..3).map(|_| spawn_child(db.url())).collect();
    wait_until_completed(&store, 300, Duration::from_secs(120)).await;
    let mut victim = children.remove(0);
    victim.kill().unwrap();
    let status = victim.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    let deadline = Instant::now() + Duration::from_secs(180);
    for child in &mut children {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "a surviving worker process failed: {status}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "worker processes did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_each_effect_once(&store, 3000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_drain_across_postgres_restart() {
    let mut cluster = EphemeralPostgres::start().unwrap();
    let url = cluster.create_database("restart_test").await.unwrap();
    let store = PgStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let merchant = register(&store, "acct_1").await;
    insert_due_tasks(&store, merchant.id, 5000).await;
    let recorder = Recorder::new(store.clone(), Duration::from_millis(1));
    let configs = (0..4)
        .map(|n| fast_config(&format!("worker-{n}")))
        .collect();
    let fleet = Fleet::start(&recorder, configs);

    wait_until_completed(&store, 1000, Duration::from_secs(120)).await;
    tokio::task::block_in_place(|| cluster.restart()).unwrap();
    wait_until_drained(&store, Duration::from_secs(180)).await;
    fleet.stop().await;

    assert_each_effect_once(&store, 5000).await;
    let calls = recorder.calls();
    assert_eq!(calls.len(), 5000, "every task's handler ran");
}
