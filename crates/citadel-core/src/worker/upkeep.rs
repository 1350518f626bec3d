//! The background work of a running worker: wake-ups, lease heartbeats and
//! rescue of expired leases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::{TaskHandler, Wakeup, WorkerConfig};
use crate::ids::TaskId;
use crate::store::Store;
use crate::task::Lease;

/// The leases of the tasks a worker has claimed and not finished, shared with
/// the heartbeat.
#[derive(Debug, Clone, Default)]
pub(super) struct HeldLeases(Arc<Mutex<HashMap<TaskId, Lease>>>);

impl HeldLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Lease>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn insert(&self, lease: Lease) {
        self.lock().insert(lease.task_id, lease);
    }

    pub(super) fn remove(&self, task_id: TaskId) -> Option<Lease> {
        self.lock().remove(&task_id)
    }

    fn snapshot(&self) -> Vec<Lease> {
        self.lock().values().cloned().collect()
    }

    /// Removes and returns every lease.
    pub(super) fn take_all(&self) -> Vec<Lease> {
        self.lock().drain().map(|(_, lease)| lease).collect()
    }

    /// Applies a heartbeat's result: renewed leases get their new expiry, and
    /// leases still held but not renewed were lost and are dropped. Returns
    /// the lost ones.
    fn renew(&self, sent: &[Lease], renewed: &[Lease]) -> Vec<TaskId> {
        let mut held = self.lock();
        for lease in renewed {
            if let Some(entry) = held.get_mut(&lease.task_id) {
                entry.expires_at = lease.expires_at;
            }
        }
        let mut lost = Vec::new();
        for lease in sent {
            let kept = renewed.iter().any(|fresh| fresh.task_id == lease.task_id);
            if !kept && held.remove(&lease.task_id).is_some() {
                lost.push(lease.task_id);
            }
        }
        lost
    }
}

/// The background tasks of one worker run; dropping it stops them.
#[derive(Debug)]
pub(super) struct Upkeep {
    wake: Arc<Notify>,
    tasks: JoinSet<()>,
}

impl Upkeep {
    /// Starts the wake-up listener (unless poll-only), the heartbeat and the
    /// rescuer.
    pub(super) async fn start<H: TaskHandler>(
        handler: &Arc<H>,
        config: &WorkerConfig,
        worker_id: Uuid,
        held: HeldLeases,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        if config.wakeup == Wakeup::Notify {
            let handler = Arc::clone(handler);
            let wake = Arc::clone(&wake);
            let retry = config.poll_interval;
            tasks.spawn(listen(handler, wake, retry).in_current_span());
        }
        let heartbeat = Heartbeat {
            worker_id,
            held,
            every: config.effective_heartbeat_interval(),
            lease_duration: config.lease_duration,
        };
        tasks.spawn(heartbeat.run(Arc::clone(handler)).in_current_span());
        tasks.spawn(rescue(Arc::clone(handler), config.rescue_interval).in_current_span());
        Self { wake, tasks }
    }

    /// Waits for a wake-up, or `poll_interval` at most.
    pub(super) async fn woken(&self, poll_interval: Duration) {
        let _ = tokio::time::timeout(poll_interval, self.wake.notified()).await;
    }

    /// Stops the background tasks.
    pub(super) async fn stop(&mut self) {
        self.tasks.shutdown().await;
    }
}

/// Turns the store's notifications into wake-ups until stopped. Without
/// notifications from the store, it ends and the worker polls.
async fn listen<H: TaskHandler>(handler: Arc<H>, wake: Arc<Notify>, retry: Duration) {
    let store = handler.store();
    let mut wakeups = loop {
        match store.listen_for_tasks().await {
            Ok(Some(wakeups)) => break wakeups,
            Ok(None) => return,
            Err(err) => {
                tracing::error!(
                    error = %crate::error_chain(&err),
                    "listening for due tasks failed; polling until it works"
                );
                tokio::time::sleep(retry).await;
            }
        }
    };
    loop {
        match wakeups.wait().await {
            // A lost connection may have dropped notifications: claim anyway.
            Ok(_) => wake.notify_one(),
            Err(err) => {
                tracing::error!(
                    error = %crate::error_chain(&err),
                    "waiting for due tasks failed; polling until it works"
                );
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// The heartbeat of a worker and of its leases.
struct Heartbeat {
    worker_id: Uuid,
    held: HeldLeases,
    every: Duration,
    lease_duration: Duration,
}

impl Heartbeat {
    async fn run<H: TaskHandler>(self, handler: Arc<H>) {
        let store = handler.store();
        let mut ticks = tokio::time::interval(self.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.beat(store).await;
        }
    }

    async fn beat<S: Store>(&self, store: &S) {
        if let Err(err) = store.worker_heartbeat(self.worker_id).await {
            tracing::warn!(error = %crate::error_chain(&err), "recording the worker's heartbeat failed");
        }
        let sent = self.held.snapshot();
        if sent.is_empty() {
            return;
        }
        match store.heartbeat_tasks(&sent, self.lease_duration).await {
            Ok(renewed) => {
                for task_id in self.held.renew(&sent, &renewed) {
                    tracing::warn!(
                        task.id = task_id.get(),
                        "lost the lease of a running task; its outcome will not be written"
                    );
                }
            }
            Err(err) => tracing::warn!(
                error = %crate::error_chain(&err),
                tasks.count = sent.len(),
                "extending task leases failed; trying again at the next heartbeat"
            ),
        }
    }
}

/// Hands back the tasks of expired leases every `every`, starting at once.
async fn rescue<H: TaskHandler>(handler: Arc<H>, every: Duration) {
    let store = handler.store();
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(err) = store.rescue_expired_tasks().await {
            tracing::warn!(
                error = %crate::error_chain(&err),
                "handing back expired leases failed; trying again at the next interval"
            );
        }
    }
}
