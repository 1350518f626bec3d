//! The worker: claims due tasks and runs them through a [`TaskHandler`].
//!
//! A worker holds nothing in memory that the store does not also hold: each
//! task is claimed from the store with a lease, run, and written back under
//! that lease. Any number of workers, in any number of processes, can share
//! one store.
//!
//! # Life of a worker started with [`Worker::run`]
//!
//! 1. It registers a [`WorkerInfo`](crate::queue::WorkerInfo) row with an id
//!    that is new on every start; that id is the owner of its leases.
//! 2. It claims a batch, runs up to `concurrency` tasks of it at once, and
//!    claims the next batch as soon as the last one has started. A claim that
//!    returned tasks is followed by another claim at once, because the claim
//!    gives each merchant only a share of a batch, so a short batch does not
//!    mean that the queue is empty. After an empty claim, the worker waits
//!    for a wake-up (NOTIFY), or for the poll interval in poll-only mode or
//!    when no wake-up comes.
//! 3. In the background it extends the leases of its tasks and its own
//!    heartbeat every `heartbeat_interval`, and hands back the tasks of dead
//!    workers (leases expired) every `rescue_interval`.
//! 4. On shutdown it stops claiming, hands its claimed but unstarted tasks
//!    back to pending at once, lets running tasks finish until
//!    `shutdown_timeout`, then stops the rest and hands them back too.

mod handler;
mod upkeep;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

pub use self::handler::TaskHandler;
use self::upkeep::{HeldLeases, Upkeep};
use crate::engine::{EngineError, TaskResult};
use crate::ids::TaskId;
use crate::store::{ClaimRequest, Store};
use crate::task::{Lease, Task};

/// The shortest pause of an idle worker between two claims.
const MIN_IDLE_PAUSE: Duration = Duration::from_millis(10);

/// The way a worker learns that tasks became due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wakeup {
    /// LISTEN for the store's notifications, and poll as a fallback.
    #[default]
    Notify,
    /// Poll only. Use it behind a transaction-pooling proxy such as
    /// PgBouncer, where LISTEN does not work.
    PollOnly,
}

/// A worker's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The worker's stable name, shown in the worker list (such as the host
    /// or pod name). Default `worker`. Leases are owned by an id that is new
    /// on every start, not by this name.
    pub name: String,
    /// How many tasks one claim takes at most. Default 10.
    pub batch_size: u32,
    /// How many tasks run at once at most. Default 10.
    pub concurrency: usize,
    /// How long a claimed task's lease lasts without a heartbeat; a task
    /// whose lease expired is handed back and may run on another worker.
    /// Default 5 minutes.
    pub lease_duration: Duration,
    /// How often the leases of running tasks are extended, and the worker's
    /// own heartbeat recorded. Default 1 minute; at most half the lease is
    /// used.
    pub heartbeat_interval: Duration,
    /// How often the worker hands back the tasks of expired leases. Default
    /// 30 seconds.
    pub rescue_interval: Duration,
    /// How long an idle worker waits before claiming again when no wake-up
    /// comes. Default 1 second.
    pub poll_interval: Duration,
    /// The way the worker learns of newly due tasks. Default
    /// [`Wakeup::Notify`].
    pub wakeup: Wakeup,
    /// How long running tasks may take to finish after shutdown starts,
    /// before they are stopped and handed back. Default 30 seconds.
    pub shutdown_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            name: "worker".to_owned(),
            batch_size: 10,
            concurrency: 10,
            lease_duration: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(60),
            rescue_interval: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            wakeup: Wakeup::Notify,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl WorkerConfig {
    /// Returns the heartbeat interval in use: the configured one, at most
    /// half the lease, so a lease is renewed at least once before it ends.
    pub fn effective_heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
            .min(self.lease_duration / 2)
            .max(Duration::from_millis(1))
    }
}

/// Counts of task results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Tasks claimed.
    pub claimed: usize,
    /// Tasks whose invoice was paid.
    pub recovered: usize,
    /// Tasks whose recovery ended without payment.
    pub lost: usize,
    /// Tasks that will run again (a decline with a retry left, or a
    /// transient error).
    pub retried: usize,
    /// Tasks that failed for good.
    pub failed: usize,
    /// Tasks whose lease was lost or whose run hit a store error; their lease
    /// will expire and the task will run again.
    pub abandoned: usize,
    /// Claimed tasks handed back at shutdown.
    pub released: usize,
}

/// Claims and runs tasks.
#[derive(Debug)]
pub struct Worker<H> {
    handler: Arc<H>,
    config: WorkerConfig,
    id: Uuid,
}

impl<H: TaskHandler> Worker<H> {
    /// Creates a worker over a shared handler, such as an
    /// [`Engine`](crate::Engine), with a new id.
    pub fn new(handler: Arc<H>, config: WorkerConfig) -> Self {
        Self {
            handler,
            config,
            id: Uuid::new_v4(),
        }
    }

    /// Returns the worker's settings.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Returns the id of this worker, new for every [`Worker::new`]; it is
    /// the owner of the worker's leases.
    pub fn id(&self) -> Uuid {
        self.id
    }

    fn claim_request(&self, limit: u32) -> ClaimRequest {
        ClaimRequest {
            worker_id: self.id.to_string(),
            kinds: self.handler.kinds(),
            limit,
            lease_duration: self.config.lease_duration,
        }
    }

    /// Claims one batch of due tasks and runs them all concurrently, without
    /// heartbeats. For tests and demos; services call [`Worker::run`].
    ///
    /// # Errors
    ///
    /// [`EngineError::Store`] when the claim fails. Errors of single tasks
    /// are logged and counted as abandoned: their lease expires and they run
    /// again.
    pub async fn run_batch(&self) -> Result<BatchReport, EngineError> {
        let request = self.claim_request(self.config.batch_size);
        let tasks = self.handler.store().claim_tasks(&request).await?;
        let mut report = BatchReport {
            claimed: tasks.len(),
            ..BatchReport::default()
        };
        if tasks.is_empty() {
            tracing::trace!(worker.id = %self.id, "no due tasks");
            return Ok(report);
        }

        let mut running = JoinSet::new();
        for task in tasks {
            let handler = Arc::clone(&self.handler);
            running.spawn(async move { (task.id, handler.handle(&task).await) }.in_current_span());
        }
        while let Some(joined) = running.join_next().await {
            record(&mut report, joined);
        }
        Ok(report)
    }

    /// Runs batches until no task of the handler's kinds is pending and no
    /// task of any kind is running, sleeping until the next task is due (at
    /// most `poll_interval` at a time) and handing back expired leases while
    /// it waits. For demos and tests; services call [`Worker::run`].
    ///
    /// # Errors
    ///
    /// [`EngineError::Store`] when the store fails.
    pub async fn run_until_idle(&self) -> Result<BatchReport, EngineError> {
        let store = self.handler.store();
        let kinds = self.handler.idle_kinds();
        let mut total = BatchReport::default();
        loop {
            let report = self.run_batch().await?;
            add(&mut total, &report);
            if report.claimed > 0 {
                continue;
            }
            let counts = store.task_counts().await?;
            if counts.running > 0 {
                store.rescue_expired_tasks().await?;
            }
            let Some(next) = store.next_run_at(&kinds).await? else {
                if counts.running == 0 {
                    return Ok(total);
                }
                tokio::time::sleep(self.config.poll_interval).await;
                continue;
            };
            // A task can be due yet not claimable for a moment (another worker
            // is committing its claim), so never spin without a pause.
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait.clamp(
                MIN_IDLE_PAUSE,
                self.config.poll_interval.max(MIN_IDLE_PAUSE),
            ))
            .await;
        }
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully (see the
    /// module documentation); returns the counts of the whole run.
    ///
    /// Store errors are logged and retried after the poll interval, so a
    /// worker outlives a database restart.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> BatchReport {
        let span = tracing::info_span!("citadel.worker", worker.id = %self.id, worker.name = %self.config.name);
        self.run_in_span(shutdown).instrument(span).await
    }

    async fn run_in_span(&self, shutdown: impl std::future::Future<Output = ()>) -> BatchReport {
        let store = self.handler.store();
        if let Err(err) = store.register_worker(self.id, &self.config.name).await {
            tracing::error!(
                error = %crate::error_chain(&err),
                "registering the worker failed; it runs, but is missing from the worker list"
            );
        }
        tracing::info!("worker started");

        let held = HeldLeases::default();
        let upkeep = Upkeep::start(&self.handler, &self.config, self.id, held.clone()).await;
        let mut run = Run {
            worker: self,
            held,
            upkeep,
            waiting: VecDeque::new(),
            running: JoinSet::new(),
            jobs: HashMap::new(),
            permits: Arc::new(Semaphore::new(self.config.concurrency.max(1))),
            report: BatchReport::default(),
        };

        tokio::pin!(shutdown);
        run.serve(&mut shutdown).await;
        run.shut_down().await;

        if let Err(err) = store.stop_worker(self.id).await {
            tracing::error!(error = %crate::error_chain(&err), "recording the worker's stop failed");
        }
        tracing::info!(
            tasks.claimed = run.report.claimed,
            tasks.released = run.report.released,
            "worker stopped"
        );
        run.report
    }
}

/// The output of one job of a worker: its task and the handler's result.
type Job = (TaskId, Result<TaskResult, EngineError>);

/// The state of one [`Worker::run`].
struct Run<'w, H: TaskHandler> {
    worker: &'w Worker<H>,
    held: HeldLeases,
    upkeep: Upkeep,
    /// Claimed tasks that have not started.
    waiting: VecDeque<Task>,
    running: JoinSet<Job>,
    /// The task of each running job, so that the lease of a job that
    /// panicked can be handed back.
    jobs: HashMap<tokio::task::Id, TaskId>,
    permits: Arc<Semaphore>,
    report: BatchReport,
}

/// The next action of the serving loop.
enum Step {
    Claim,
    Wait,
}

impl<H: TaskHandler> Run<'_, H> {
    /// Claims and starts tasks until `shutdown` resolves.
    async fn serve(&mut self, shutdown: &mut (impl std::future::Future<Output = ()> + Unpin)) {
        let mut step = Step::Claim;
        loop {
            if self.waiting.is_empty() {
                if let Step::Wait = step {
                    tokio::select! {
                        () = &mut *shutdown => return,
                        () = self.upkeep.woken(self.worker.config.poll_interval) => {}
                        Some(joined) = self.running.join_next_with_id() => {
                            self.finish(joined).await;
                            continue;
                        }
                    }
                }
                step = self.claim().await;
                continue;
            }

            tokio::select! {
                () = &mut *shutdown => return,
                permit = Arc::clone(&self.permits).acquire_owned() => {
                    let Ok(permit) = permit else { return };
                    if let Some(task) = self.waiting.pop_front() {
                        self.start(task, permit);
                    }
                }
                Some(joined) = self.running.join_next_with_id() => self.finish(joined).await,
            }
        }
    }

    /// Claims a batch into `waiting`. Returns [`Step::Claim`] when the claim
    /// returned tasks, so the next claim follows at once, and [`Step::Wait`]
    /// when it returned none or failed.
    async fn claim(&mut self) -> Step {
        let config = &self.worker.config;
        let request = self.worker.claim_request(config.batch_size);
        match self.worker.handler.store().claim_tasks(&request).await {
            Ok(tasks) => {
                let tasks_claimed = tasks.len();
                self.report.claimed += tasks_claimed;
                for task in &tasks {
                    if let Some(lease) = &task.lease {
                        self.held.insert(lease.clone());
                    }
                }
                tracing::trace!(claim.count = tasks.len(), "claimed tasks");
                self.waiting.extend(tasks);
                if tasks_claimed > 0 {
                    Step::Claim
                } else {
                    Step::Wait
                }
            }
            Err(err) => {
                tracing::error!(
                    error = %crate::error_chain(&err),
                    "claiming tasks failed; trying again after the poll interval"
                );
                // Waiting, not sleeping here, keeps shutdown responsive
                // while the database is down.
                Step::Wait
            }
        }
    }

    fn start(&mut self, task: Task, permit: tokio::sync::OwnedSemaphorePermit) {
        let handler = Arc::clone(&self.worker.handler);
        let task_id = task.id;
        let job = self.running.spawn(
            async move {
                let result = handler.handle(&task).await;
                drop(permit);
                (task.id, result)
            }
            .in_current_span(),
        );
        self.jobs.insert(job.id(), task_id);
    }

    /// Records a finished job and drops its lease from the held leases. The
    /// task of a job that panicked is handed back to pending at once.
    async fn finish(&mut self, joined: Result<(tokio::task::Id, Job), tokio::task::JoinError>) {
        let job_id = match &joined {
            Ok((id, _)) => *id,
            Err(err) => err.id(),
        };
        let lease = self
            .jobs
            .remove(&job_id)
            .and_then(|task_id| self.held.remove(task_id));
        if let Some(lease) = lease
            && joined.is_err()
        {
            release(self.worker.handler.store(), &[lease], false).await;
        }
        record(&mut self.report, joined.map(|(_, job)| job));
    }

    /// Hands back the waiting tasks, lets the running ones finish until the
    /// shutdown timeout, then stops and hands back the rest.
    async fn shut_down(&mut self) {
        let store = self.worker.handler.store();
        tracing::info!(
            tasks.waiting = self.waiting.len(),
            tasks.running = self.running.len(),
            "shutting down: handing back unstarted tasks"
        );
        let unstarted: Vec<Lease> = self
            .waiting
            .drain(..)
            .filter_map(|task| task.lease)
            .collect();
        for lease in &unstarted {
            self.held.remove(lease.task_id);
        }
        self.report.released += release(store, &unstarted, true).await;

        let deadline = tokio::time::Instant::now() + self.worker.config.shutdown_timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.running.join_next_with_id()).await {
                Ok(Some(joined)) => self.finish(joined).await,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        tasks.running = self.running.len(),
                        "running tasks did not finish before the shutdown timeout; stopping them"
                    );
                    self.running.shutdown().await;
                    break;
                }
            }
        }
        self.upkeep.stop().await;

        let stopped = self.held.take_all();
        self.report.released += release(store, &stopped, false).await;
    }
}

/// Hands tasks back to pending; returns how many, logging a failure, after
/// which the tasks come back when their lease expires.
async fn release<S: Store>(store: &S, leases: &[Lease], unstarted: bool) -> usize {
    if leases.is_empty() {
        return 0;
    }
    match store.release_tasks(leases, unstarted).await {
        Ok(released) => usize::try_from(released).unwrap_or(usize::MAX),
        Err(err) => {
            tracing::error!(
                error = %crate::error_chain(&err),
                tasks.count = leases.len(),
                "handing back tasks failed; they run again once their lease expires"
            );
            0
        }
    }
}

fn record(report: &mut BatchReport, joined: Result<Job, tokio::task::JoinError>) {
    match joined {
        Ok((_, Ok(result))) => count(report, &result),
        Ok((task_id, Err(err))) => {
            tracing::error!(
                task.id = task_id.get(),
                error = %crate::error_chain(&err),
                "task run failed; it will run again after its lease expires"
            );
            report.abandoned += 1;
        }
        Err(err) if err.is_cancelled() => report.abandoned += 1,
        Err(err) => {
            tracing::error!(
                error = %err,
                "task run panicked; it will run again after its lease expires"
            );
            report.abandoned += 1;
        }
    }
}

fn count(report: &mut BatchReport, result: &TaskResult) {
    match result {
        TaskResult::Recovered => report.recovered += 1,
        TaskResult::Lost => report.lost += 1,
        TaskResult::RetryScheduled | TaskResult::Rescheduled => report.retried += 1,
        TaskResult::Completed => {}
        TaskResult::Failed => report.failed += 1,
        TaskResult::LeaseLost => report.abandoned += 1,
    }
}

fn add(total: &mut BatchReport, report: &BatchReport) {
    total.claimed += report.claimed;
    total.recovered += report.recovered;
    total.lost += report.lost;
    total.retried += report.retried;
    total.failed += report.failed;
    total.abandoned += report.abandoned;
    total.released += report.released;
}
