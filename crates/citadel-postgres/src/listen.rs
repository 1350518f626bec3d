//! Wake-ups by LISTEN/NOTIFY on the `citadel_tasks` channel.
//!
//! The insert trigger of migration 0003 notifies once per statement that
//! inserts a due task, and handing tasks back notifies too. Each worker holds
//! one listening connection, outside the pool's count.
//!
//! NOTE: LISTEN needs a session of its own, which a transaction-pooling
//! proxy such as PgBouncer does not give; run workers in poll-only mode
//! there.

use async_trait::async_trait;
use citadel_core::queue::TaskWakeups;
use citadel_core::store::StoreError;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::error::database;

/// The channel that due tasks are announced on.
pub(crate) const CHANNEL: &str = "citadel_tasks";

/// A listening connection on [`CHANNEL`].
#[derive(Debug)]
pub(crate) struct PgWakeups {
    listener: PgListener,
}

impl PgWakeups {
    /// Opens a connection and listens on [`CHANNEL`].
    pub(crate) async fn listen(pool: &PgPool) -> Result<Self, StoreError> {
        let mut listener = PgListener::connect_with(pool)
            .await
            .map_err(database("opening the wake-up connection"))?;
        listener
            .listen(CHANNEL)
            .await
            .map_err(database("listening for due tasks"))?;
        Ok(Self { listener })
    }
}

#[async_trait]
impl TaskWakeups for PgWakeups {
    async fn wait(&mut self) -> Result<bool, StoreError> {
        let received = self
            .listener
            .try_recv()
            .await
            .map_err(database("waiting for due tasks"))?;
        if received.is_none() {
            tracing::warn!("the wake-up connection was lost; listening again");
            return Ok(false);
        }

        // Fold the notifications that arrived meanwhile into this wake-up.
        while self.listener.next_buffered().is_some() {}
        Ok(true)
    }
}
