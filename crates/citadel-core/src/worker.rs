//! The worker: claims due tasks and runs them through the engine.
//!
//! A worker holds nothing in memory between batches: each batch is claimed
//! from the store with a lease, run, and written back. Any number of workers,
//! in any number of processes, can share one store.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::engine::{Engine, EngineError, TaskResult};
use crate::payment::PaymentGateway;
use crate::store::{ClaimRequest, Store};
use crate::task::TaskKind;

/// The shortest pause of an idle worker between two claims.
const MIN_IDLE_PAUSE: Duration = Duration::from_millis(10);

/// A worker's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The id stored as the lease owner. Default: `worker-` and a random
    /// UUID, so a restarted worker never inherits a dead one's leases.
    pub worker_id: String,
    /// How many tasks one claim takes at most. Default 10.
    pub batch_size: u32,
    /// How long a claimed task's lease lasts; a task still running after it
    /// may be claimed by another worker. Default 5 minutes, far above the
    /// 80 seconds Stripe's API takes at worst to respond.
    pub lease_duration: Duration,
    /// How long an idle worker waits before claiming again. Default 1 second.
    pub poll_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("worker-{}", uuid::Uuid::new_v4()),
            batch_size: 10,
            lease_duration: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Counts of one batch's task results.
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
}

/// Claims and runs retry and customer notice tasks.
#[derive(Debug)]
pub struct Worker<S, G> {
    engine: Arc<Engine<S, G>>,
    config: WorkerConfig,
}

impl<S: Store, G: PaymentGateway> Worker<S, G> {
    /// Creates a worker over a shared engine.
    pub fn new(engine: Arc<Engine<S, G>>, config: WorkerConfig) -> Self {
        Self { engine, config }
    }

    /// Returns the worker's settings.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Claims one batch of due tasks and runs them concurrently.
    ///
    /// # Errors
    ///
    /// [`EngineError::Store`] when the claim fails. Errors of single tasks
    /// are logged and counted as abandoned: their lease expires and they run
    /// again.
    pub async fn run_batch(&self) -> Result<BatchReport, EngineError> {
        let request = ClaimRequest {
            worker_id: self.config.worker_id.clone(),
            kinds: worker_kinds().to_vec(),
            limit: self.config.batch_size,
            lease_duration: self.config.lease_duration,
        };
        let tasks = self.engine.store().claim_tasks(&request).await?;
        let mut report = BatchReport {
            claimed: tasks.len(),
            ..BatchReport::default()
        };
        if tasks.is_empty() {
            tracing::trace!(worker.id = %self.config.worker_id, "no due tasks");
            return Ok(report);
        }

        let mut running = JoinSet::new();
        for task in tasks {
            let engine = Arc::clone(&self.engine);
            running.spawn(async move { (task.id, engine.run_task(&task).await) }.in_current_span());
        }
        while let Some(joined) = running.join_next().await {
            match joined {
                Ok((_, Ok(result))) => count(&mut report, &result),
                Ok((task_id, Err(err))) => {
                    tracing::error!(
                        task.id = task_id.get(),
                        error = %crate::error_chain(&err),
                        "task run failed; it will run again after its lease expires"
                    );
                    report.abandoned += 1;
                }
                Err(err) => {
                    tracing::error!(
                        error = %err,
                        "task run panicked; it will run again after its lease expires"
                    );
                    report.abandoned += 1;
                }
            }
        }
        Ok(report)
    }

    /// Runs batches until no retry or notice task is pending and no task of any kind
    /// is running, sleeping until the next task is due (at most
    /// `poll_interval` at a time). For demos and tests; services call
    /// [`Worker::run`].
    ///
    /// # Errors
    ///
    /// [`EngineError::Store`] when the store fails.
    pub async fn run_until_idle(&self) -> Result<BatchReport, EngineError> {
        let mut total = BatchReport::default();
        loop {
            let report = self.run_batch().await?;
            add(&mut total, &report);
            if report.claimed > 0 {
                continue;
            }
            let counts = self.engine.store().task_counts().await?;
            let Some(next) = self.engine.store().next_run_at(&worker_kinds()).await? else {
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

    /// Runs batches until `shutdown` resolves, polling every
    /// `poll_interval` while idle. A batch that has started finishes first.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let idle = match self.run_batch().await {
                Ok(report) => report.claimed == 0,
                Err(err) => {
                    tracing::error!(
                        worker.id = %self.config.worker_id,
                        error = %crate::error_chain(&err),
                        "claiming tasks failed; trying again after the poll interval"
                    );
                    true
                }
            };
            if !idle {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }
}

/// Returns the task kinds a worker claims: retries and customer notices.
fn worker_kinds() -> [TaskKind; 2] {
    [
        TaskKind::retry_payment(),
        TaskKind::new(TaskKind::SEND_NOTICE),
    ]
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
}
