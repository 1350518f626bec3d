//! [`TaskHandler`]: the work a [`Worker`](super::Worker) runs on each
//! claimed task.

use async_trait::async_trait;

use crate::engine::{Engine, EngineError, TaskResult};
use crate::payment::PaymentGateway;
use crate::store::Store;
use crate::task::{Task, TaskKind};

/// Runs claimed tasks and records each one's outcome under its lease.
///
/// [`Engine`] is the handler of retry-payment tasks. A handler must write the
/// task's end through [`crate::store::StoreTx::finish_task`] with the task's
/// lease, in the same transaction as its effects, so that a run whose lease
/// was taken over writes nothing.
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// The store the tasks are claimed from.
    type Store: Store;

    /// Returns the store the tasks are claimed from.
    fn store(&self) -> &Self::Store;

    /// Returns the kinds of task this handler runs; a worker claims only
    /// these.
    fn kinds(&self) -> Vec<TaskKind>;

    /// Returns the kinds of task that [`Worker::run_until_idle`](super::Worker::run_until_idle)
    /// waits for; all of [`TaskHandler::kinds`] unless a handler has kinds
    /// that are due only far in the future.
    fn idle_kinds(&self) -> Vec<TaskKind> {
        self.kinds()
    }

    /// Runs one claimed task.
    ///
    /// # Errors
    ///
    /// An [`EngineError`] when the outcome could not be written. The task then
    /// stays running until its lease expires and is run again.
    async fn handle(&self, task: &Task) -> Result<TaskResult, EngineError>;
}

#[async_trait]
impl<S: Store, G: PaymentGateway> TaskHandler for Engine<S, G> {
    type Store = S;

    fn store(&self) -> &S {
        Engine::store(self)
    }

    fn kinds(&self) -> Vec<TaskKind> {
        vec![
            TaskKind::retry_payment(),
            TaskKind::new(TaskKind::FINAL_ACTION),
            TaskKind::new(TaskKind::CLOSE_RECOVERY),
            TaskKind::new(TaskKind::SEND_NOTICE),
        ]
    }

    /// Leaves out the close of a recovery, which is due only when its window
    /// ends, days or weeks away. A running worker claims it when due.
    fn idle_kinds(&self) -> Vec<TaskKind> {
        vec![
            TaskKind::retry_payment(),
            TaskKind::new(TaskKind::FINAL_ACTION),
            TaskKind::new(TaskKind::SEND_NOTICE),
        ]
    }

    async fn handle(&self, task: &Task) -> Result<TaskResult, EngineError> {
        self.run_task(task).await
    }
}
