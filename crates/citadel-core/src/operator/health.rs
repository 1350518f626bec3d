//! Health: whether the database is reachable, whether its schema is current,
//! and how far behind the queue is.

use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::Operator;
use crate::store::Store;

/// How long a worker may go without a heartbeat and still count as alive:
/// three of the default 1-minute heartbeat intervals of
/// [`WorkerConfig`](crate::worker::WorkerConfig).
pub const WORKER_SILENCE_LIMIT: Duration = Duration::from_secs(180);

/// The health of a Citadel deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Whether the database was reachable.
    pub database_reachable: bool,
    /// Whether every migration this build embeds is applied; `false` also
    /// when the database was unreachable.
    pub migrations_current: bool,
    /// The versions of the embedded migrations the database has not applied.
    pub pending_migrations: Vec<i64>,
    /// Workers not stopped whose last heartbeat is at most
    /// [`WORKER_SILENCE_LIMIT`] old; `None` when the store could not list
    /// them.
    pub workers_alive: Option<u64>,
    /// How long the oldest due pending task has been due, in seconds; `None`
    /// when no task is due.
    pub oldest_due_task_age_seconds: Option<i64>,
    /// The store error that made a check fail, if any.
    pub error: Option<String>,
}

impl Health {
    /// Returns whether the database is reachable and its schema is current.
    pub fn is_healthy(&self) -> bool {
        self.database_reachable && self.migrations_current
    }
}

impl<S: Store> Operator<'_, S> {
    /// Checks the store. It returns no error, because a failed check is part
    /// of the result, and it reads no merchant's rows, so every scope may
    /// call it.
    pub async fn health(&self) -> Health {
        let mut health = Health {
            database_reachable: false,
            migrations_current: false,
            pending_migrations: Vec::new(),
            workers_alive: None,
            oldest_due_task_age_seconds: None,
            error: None,
        };
        match self.store.pending_migrations().await {
            Ok(pending) => {
                health.database_reachable = true;
                health.migrations_current = pending.is_empty();
                health.pending_migrations = pending;
            }
            Err(err) => {
                health.error = Some(crate::error_chain(&err));
                return health;
            }
        }
        match self.store.list_workers().await {
            Ok(workers) => {
                let now = Utc::now();
                let alive = workers
                    .iter()
                    .filter(|worker| worker.is_live(now, WORKER_SILENCE_LIMIT))
                    .count();
                health.workers_alive = Some(u64::try_from(alive).unwrap_or(u64::MAX));
            }
            Err(err) => health.error = Some(crate::error_chain(&err)),
        }
        match self.store.oldest_due_run_at().await {
            Ok(oldest) => {
                health.oldest_due_task_age_seconds =
                    oldest.map(|run_at| (Utc::now() - run_at).num_seconds().max(0));
            }
            Err(err) => health.error = Some(crate::error_chain(&err)),
        }
        health
    }
}
