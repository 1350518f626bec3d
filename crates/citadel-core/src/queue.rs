//! Types of the task queue's upkeep: worker identity, wake-ups and pruning.
//!
//! A worker process registers itself as a [`WorkerInfo`] row with an id that
//! is new on every start, and keeps its `heartbeat_at` fresh while it runs.
//! Its leases carry that id as their owner, so a restarted worker (same
//! name, new id) never owns a lease of its previous run: those expire and
//! are rescued like any other.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::StoreError;

/// One start of a worker, as registered in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The id of this start, new each time; it is the owner of the leases
    /// that the worker takes.
    pub id: Uuid,
    /// The stable name from the worker's configuration, shared by its
    /// restarts (such as a host or pod name).
    pub name: String,
    /// When this start registered.
    pub started_at: DateTime<Utc>,
    /// When the worker last reported that it is alive.
    pub heartbeat_at: DateTime<Utc>,
    /// When the worker shut down gracefully; `None` while it runs, or when
    /// it died without shutting down.
    pub stopped_at: Option<DateTime<Utc>>,
}

impl WorkerInfo {
    /// Returns whether the worker is alive at `now`: not stopped, with a
    /// heartbeat no older than `max_silence`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use chrono::Utc;
    /// use citadel_core::queue::WorkerInfo;
    ///
    /// let now = Utc::now();
    /// let worker = WorkerInfo {
    ///     id: uuid::Uuid::new_v4(),
    ///     name: "worker-a".into(),
    ///     started_at: now,
    ///     heartbeat_at: now - chrono::Duration::seconds(5),
    ///     stopped_at: None,
    /// };
    /// assert!(worker.is_live(now, Duration::from_secs(30)));
    /// assert!(!worker.is_live(now, Duration::from_secs(1)));
    /// ```
    pub fn is_live(&self, now: DateTime<Utc>, max_silence: Duration) -> bool {
        let silence = (now - self.heartbeat_at).to_std().unwrap_or(Duration::ZERO);
        self.stopped_at.is_none() && silence <= max_silence
    }
}

/// How long finished rows are kept before [`crate::store::Store::prune`]
/// deletes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Completed and cancelled tasks older than this (by their last change)
    /// are deleted. Failed tasks are kept for an operator to look at.
    pub finished_tasks: Duration,
    /// Processed Stripe events received longer ago than this are deleted.
    /// Keep it above the 3 days over which Stripe redelivers an event, or a
    /// late redelivery is applied a second time.
    pub processed_events: Duration,
    /// Worker rows whose last heartbeat (or stop) is older than this are
    /// deleted.
    pub workers: Duration,
    /// At most this many rows of one table are deleted per statement, so a
    /// prune never holds locks on a large part of a hot table.
    pub batch_size: u32,
}

impl Default for Retention {
    /// Completed tasks 7 days, processed events 30 days, workers 7 days,
    /// 1,000 rows per statement.
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 60 * 60);
        Self {
            finished_tasks: 7 * DAY,
            processed_events: 30 * DAY,
            workers: 7 * DAY,
            batch_size: 1000,
        }
    }
}

/// The rows one prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Completed and cancelled tasks.
    pub tasks: u64,
    /// Processed Stripe events.
    pub events: u64,
    /// Worker rows.
    pub workers: u64,
}

/// A subscription to the store's wake-ups for newly due tasks.
#[async_trait]
pub trait TaskWakeups: Send {
    /// Waits for the next wake-up. Several wake-ups that arrive while nobody
    /// waits are folded into one.
    ///
    /// Returns `Ok(false)` when the subscription lost its connection and
    /// re-subscribed, so wake-ups may have been missed: the caller should
    /// claim as if woken.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when re-subscribing failed; call again to
    /// retry.
    async fn wait(&mut self) -> Result<bool, StoreError>;
}
