//! Health: whether the database is reachable, whether its schema is current,
//! and how far behind the queue is.

use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::Operator;
use crate::store::Store;

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
    /// Workers that sent a heartbeat recently; `None` while unknown.
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
            // TODO: count the workers whose heartbeat is recent once the
            // store lists workers; until then this is unknown.
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
