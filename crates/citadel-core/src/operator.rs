//! The operator API: typed methods for dashboards, task and merchant
//! management, the activity ledger, external workers and health checks.
//!
//! Every call goes through an [`Operator`], which pairs a store with the
//! caller's [`Scope`]. [`Scope::Operator`] can read and change every row.
//! [`Scope::Merchant`] sees only its own merchant's rows: a task or merchant
//! of another merchant is reported as not found, exactly like a missing one,
//! so a merchant cannot learn which ids exist. Lists are restricted in the
//! SQL itself, so no row of another merchant is ever read into a page.
//!
//! # Examples
//!
//! ```no_run
//! use citadel_core::operator::{Operator, Scope};
//! use citadel_core::store::{Store, TaskFilter};
//! use citadel_core::task::TaskStatus;
//!
//! # async fn run(store: impl Store) -> Result<(), Box<dyn std::error::Error>> {
//! let operator = Operator::new(&store, Scope::Operator);
//! let filter = TaskFilter { status: Some(TaskStatus::Failed), ..TaskFilter::default() };
//! for task in operator.list_tasks(filter).await?.items {
//!     operator.retry_task(task.id).await?;
//! }
//! # Ok(())
//! # }
//! ```

mod dashboard;
mod health;
pub mod token;
mod worker;

use serde::{Deserialize, Serialize};

use crate::activity::{Activity, ActivityFilter};
use crate::ids::{ActivityId, MerchantId, TaskId};
use crate::merchant::{Merchant, MerchantStatus, NewMerchant};
use crate::policy::{RecoveryPolicy, Schedule, parse_time_zone};
use crate::secret::Secret;
use crate::store::{Store, StoreError, TaskChange, TaskFilter};
use crate::task::{MAX_PRIORITY, NewTask, Task, TaskKind, TaskStatus, Transition};

pub use dashboard::Dashboard;
pub use health::{Health, WORKER_SILENCE_LIMIT};
pub use worker::{CompleteRequest, MAX_CLAIM_LIMIT, MAX_LEASE, WorkerOutcome};

/// The number of rows a page has when the caller sets no limit.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;

/// The maximum number of rows a caller may request per page.
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// The maximum length of a merchant's name, in bytes.
const MAX_NAME_LEN: usize = 200;

/// The maximum number of retries a policy may schedule.
const MAX_POLICY_RETRIES: usize = 100;

/// The maximum delay a policy may set between two retries: 366 days.
const MAX_POLICY_DELAY: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 60 * 60);

/// Whose rows a caller may see and change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The platform's operator: every merchant's rows.
    Operator,
    /// One merchant: only its own rows.
    Merchant(MerchantId),
}

impl Scope {
    /// Returns the merchant a merchant scope is restricted to, or `None` for
    /// the operator.
    pub const fn merchant(self) -> Option<MerchantId> {
        match self {
            Scope::Operator => None,
            Scope::Merchant(id) => Some(id),
        }
    }

    /// Returns whether this scope may see the rows of `merchant`.
    pub fn allows(self, merchant: MerchantId) -> bool {
        match self {
            Scope::Operator => true,
            Scope::Merchant(own) => own == merchant,
        }
    }
}

/// An error from the operator API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    /// No task with this id exists in the caller's scope.
    #[error("task {0} not found")]
    TaskNotFound(TaskId),
    /// No merchant with this id exists in the caller's scope.
    #[error("merchant {0} not found")]
    MerchantNotFound(MerchantId),
    /// The call is reserved to the operator.
    #[error("only the operator may {action}; use the operator token")]
    Forbidden {
        /// The action the caller requested, such as "create merchants".
        action: &'static str,
    },
    /// The task's status does not allow the requested change.
    #[error("task {id} is {status}: {hint}")]
    TaskStatusConflict {
        /// The task.
        id: TaskId,
        /// Its current status.
        status: TaskStatus,
        /// The action the caller can take instead.
        hint: &'static str,
    },
    /// Another live task of the merchant has the same dedupe key.
    #[error(
        "a pending or running task with dedupe key {dedupe_key:?} already exists; wait for it to finish or use another key"
    )]
    DuplicateDedupeKey {
        /// The key.
        dedupe_key: String,
    },
    /// The lease token does not match the task's current lease.
    #[error(
        "task {id} is not running under this lease token: the lease expired or another worker claimed the task; claim again"
    )]
    LeaseMismatch {
        /// The task.
        id: TaskId,
    },
    /// An input value is invalid.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The field, such as `limit`.
        field: &'static str,
        /// The problem and the value to send instead.
        message: String,
    },
    /// The operating system's random source failed while generating a
    /// token.
    #[error(transparent)]
    RandomSource(#[from] token::RandomSourceError),
    /// The store failed, or rejected a duplicate connected account.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> OperatorError {
    OperatorError::InvalidInput {
        field,
        message: message.into(),
    }
}

/// One page of a list, newest first for tasks and activity and by id for
/// merchants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T, C> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// The cursor of the next page, `None` on the last page. Pass it as the
    /// filter's `before` (tasks, activity) or `after` (merchants).
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// Builds a page; it has a next page when it is full.
    fn new(items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> C) -> Self {
        let full = u32::try_from(items.len()).is_ok_and(|len| len >= limit);
        let next = if full { items.last().map(cursor) } else { None };
        Self { items, next }
    }

    fn empty() -> Self {
        Self {
            items: Vec::new(),
            next: None,
        }
    }
}

/// A change to a merchant; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MerchantUpdate {
    /// The new recovery policy. It applies to retries scheduled from now
    /// on.
    pub policy: Option<RecoveryPolicy>,
    /// The new status: `paused` stops the claim of the merchant's tasks until
    /// it is `active` again. Events are still applied while paused.
    pub status: Option<MerchantStatus>,
}

/// A merchant just registered, with its API token. The token is shown only
/// here: the store keeps its hash.
#[derive(Debug, Clone)]
pub struct CreatedMerchant {
    /// The merchant as stored.
    pub merchant: Merchant,
    /// The merchant's bearer token for the HTTP API.
    pub token: Secret,
}

/// The operator API over a store, restricted to a scope.
#[derive(Debug, Clone, Copy)]
pub struct Operator<'a, S> {
    store: &'a S,
    scope: Scope,
}

impl<'a, S: Store> Operator<'a, S> {
    /// Creates the API for a caller with `scope`.
    pub fn new(store: &'a S, scope: Scope) -> Self {
        Self { store, scope }
    }

    /// Returns the caller's scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    fn require_operator(&self, action: &'static str) -> Result<(), OperatorError> {
        match self.scope {
            Scope::Operator => Ok(()),
            Scope::Merchant(_) => Err(OperatorError::Forbidden { action }),
        }
    }

    /// Returns the merchant filter to apply, or `None` when a merchant asked
    /// for another merchant's rows and must get an empty page.
    fn restrict(&self, requested: Option<MerchantId>) -> Option<Option<MerchantId>> {
        match (self.scope, requested) {
            (Scope::Operator, requested) => Some(requested),
            (Scope::Merchant(own), None) => Some(Some(own)),
            (Scope::Merchant(own), Some(requested)) if requested == own => Some(Some(own)),
            (Scope::Merchant(_), Some(_)) => None,
        }
    }

    /// Lists tasks newest first, one page at a time.
    ///
    /// # Errors
    ///
    /// [`OperatorError::InvalidInput`] for a limit of 0 or above
    /// [`MAX_PAGE_LIMIT`]; [`OperatorError::Store`] when the store fails.
    pub async fn list_tasks(
        &self,
        filter: TaskFilter,
    ) -> Result<Page<Task, TaskId>, OperatorError> {
        let limit = page_limit(filter.limit)?;
        let Some(merchant_id) = self.restrict(filter.merchant_id) else {
            return Ok(Page::empty());
        };
        let filter = TaskFilter {
            merchant_id,
            limit: Some(limit),
            ..filter
        };
        let tasks = self.store.list_tasks(&filter).await?;
        Ok(Page::new(tasks, limit, |task| task.id))
    }

    /// Returns a task.
    ///
    /// # Errors
    ///
    /// [`OperatorError::TaskNotFound`] when it does not exist in the scope.
    pub async fn task(&self, id: TaskId) -> Result<Task, OperatorError> {
        match self.store.task(id).await? {
            Some(task) if self.scope.allows(task.merchant_id) => Ok(task),
            _ => Err(OperatorError::TaskNotFound(id)),
        }
    }

    /// Queues a task.
    ///
    /// A `retry_payment` task's payload must be a
    /// [`crate::task::RetryPayment`] naming the task's invoice.
    ///
    /// # Errors
    ///
    /// [`OperatorError::MerchantNotFound`] when the merchant is not in the
    /// scope, [`OperatorError::InvalidInput`] for an empty kind, a
    /// `max_attempts` below 1, a priority outside 0 to [`MAX_PRIORITY`] or a
    /// payload that does not fit the kind, and
    /// [`OperatorError::DuplicateDedupeKey`] when a live task has the same
    /// dedupe key.
    pub async fn create_task(&self, task: NewTask) -> Result<Task, OperatorError> {
        validate_new_task(&task)?;
        self.merchant(task.merchant_id).await?;

        let mut tx = self.store.begin().await?;
        let Some(id) = tx.insert_task(&task).await? else {
            return Err(OperatorError::DuplicateDedupeKey {
                dedupe_key: task.dedupe_key.unwrap_or_default(),
            });
        };
        tx.commit().await?;
        self.task(id).await
    }

    /// Sends a failed task back to the queue, due now and with its attempts
    /// reset.
    ///
    /// # Errors
    ///
    /// [`OperatorError::TaskNotFound`] when it does not exist in the scope,
    /// [`OperatorError::TaskStatusConflict`] when it is not failed, and
    /// [`OperatorError::DuplicateDedupeKey`] when a live task has its dedupe
    /// key.
    pub async fn retry_task(&self, id: TaskId) -> Result<Task, OperatorError> {
        match self
            .store
            .retry_failed_task(id, self.scope.merchant())
            .await?
        {
            TaskChange::Changed(task) => {
                tracing::info!(
                    task.id = id.get(),
                    merchant.id = task.merchant_id.get(),
                    "task retried by operator"
                );
                Ok(*task)
            }
            TaskChange::NotFound => Err(OperatorError::TaskNotFound(id)),
            TaskChange::WrongStatus(status) => {
                debug_assert!(status.apply(Transition::OperatorRetry).is_err());
                Err(OperatorError::TaskStatusConflict {
                    id,
                    status,
                    hint: "only a failed task can be retried",
                })
            }
            TaskChange::DuplicateDedupeKey(dedupe_key) => {
                Err(OperatorError::DuplicateDedupeKey { dedupe_key })
            }
        }
    }

    /// Deletes a task that is not running, and returns it as it was. The
    /// activity ledger keeps its history.
    ///
    /// # Errors
    ///
    /// [`OperatorError::TaskNotFound`] when it does not exist in the scope,
    /// and [`OperatorError::TaskStatusConflict`] when it is running.
    pub async fn delete_task(&self, id: TaskId) -> Result<Task, OperatorError> {
        match self.store.delete_task(id, self.scope.merchant()).await? {
            TaskChange::Changed(task) => {
                tracing::info!(
                    task.id = id.get(),
                    merchant.id = task.merchant_id.get(),
                    "task deleted by operator"
                );
                Ok(*task)
            }
            TaskChange::WrongStatus(status) => Err(OperatorError::TaskStatusConflict {
                id,
                status,
                hint: "a running task cannot be deleted; wait until it finishes or its lease expires",
            }),
            _ => Err(OperatorError::TaskNotFound(id)),
        }
    }

    /// Deletes every completed task in the scope; returns how many.
    ///
    /// # Errors
    ///
    /// [`OperatorError::Store`] when the store fails.
    pub async fn clear_completed(&self) -> Result<u64, OperatorError> {
        let deleted = self
            .store
            .delete_completed_tasks(self.scope.merchant())
            .await?;
        tracing::info!(tasks.deleted = deleted, "completed tasks cleared");
        Ok(deleted)
    }

    /// Lists merchants by id, one page at a time, starting after `after`.
    /// A merchant scope lists only its own merchant.
    ///
    /// # Errors
    ///
    /// [`OperatorError::InvalidInput`] for a limit of 0 or above
    /// [`MAX_PAGE_LIMIT`].
    pub async fn list_merchants(
        &self,
        after: Option<MerchantId>,
        limit: Option<u32>,
    ) -> Result<Page<Merchant, MerchantId>, OperatorError> {
        let limit = page_limit(limit)?;
        let merchants = match self.scope {
            Scope::Operator => self.store.list_merchants_page(after, limit).await?,
            Scope::Merchant(own) if after.is_none_or(|after| after < own) => {
                self.store.merchant(own).await?.into_iter().collect()
            }
            Scope::Merchant(_) => Vec::new(),
        };
        Ok(Page::new(merchants, limit, |merchant| merchant.id))
    }

    /// Returns a merchant.
    ///
    /// # Errors
    ///
    /// [`OperatorError::MerchantNotFound`] when it does not exist in the
    /// scope.
    pub async fn merchant(&self, id: MerchantId) -> Result<Merchant, OperatorError> {
        if !self.scope.allows(id) {
            return Err(OperatorError::MerchantNotFound(id));
        }
        self.store
            .merchant(id)
            .await?
            .ok_or(OperatorError::MerchantNotFound(id))
    }

    /// Registers a merchant and generates its API token. Operator only.
    ///
    /// # Errors
    ///
    /// [`OperatorError::Forbidden`] for a merchant scope,
    /// [`OperatorError::InvalidInput`] for an empty or long name, a time
    /// zone that is not an IANA name, or a policy out of bounds, and
    /// [`StoreError::DuplicateAccount`] when the account is registered.
    pub async fn create_merchant(
        &self,
        merchant: NewMerchant,
    ) -> Result<CreatedMerchant, OperatorError> {
        self.require_operator("create merchants")?;
        validate_name(&merchant.name)?;
        validate_time_zone(&merchant.time_zone)?;
        validate_policy(&merchant.policy)?;

        let (token, hash) = token::generate_merchant_token()?;
        let merchant = self
            .store
            .create_merchant_with_token(&merchant, &hash)
            .await?;
        tracing::info!(merchant.id = merchant.id.get(), "merchant registered");
        Ok(CreatedMerchant { merchant, token })
    }

    /// Changes a merchant's policy or status; pausing stops the claim of its
    /// tasks until it is resumed. Operator only.
    ///
    /// # Errors
    ///
    /// [`OperatorError::Forbidden`] for a merchant scope,
    /// [`OperatorError::InvalidInput`] for a policy out of bounds, and
    /// [`OperatorError::MerchantNotFound`] when the merchant does not exist.
    pub async fn update_merchant(
        &self,
        id: MerchantId,
        update: MerchantUpdate,
    ) -> Result<Merchant, OperatorError> {
        self.require_operator("change merchants")?;
        if let Some(policy) = &update.policy {
            validate_policy(policy)?;
        }
        let merchant = self
            .store
            .update_merchant(id, &update)
            .await?
            .ok_or(OperatorError::MerchantNotFound(id))?;
        tracing::info!(merchant.id = id.get(), merchant.status = %merchant.status, "merchant updated");
        Ok(merchant)
    }

    /// Lists the activity ledger newest first, one page at a time.
    ///
    /// # Errors
    ///
    /// [`OperatorError::InvalidInput`] for a limit of 0 or above
    /// [`MAX_PAGE_LIMIT`].
    pub async fn list_activity(
        &self,
        filter: ActivityFilter,
    ) -> Result<Page<Activity, ActivityId>, OperatorError> {
        let limit = page_limit(filter.limit)?;
        let Some(merchant_id) = self.restrict(filter.merchant_id) else {
            return Ok(Page::empty());
        };
        let filter = ActivityFilter {
            merchant_id,
            limit: Some(limit),
            ..filter
        };
        let rows = self.store.list_activity(&filter).await?;
        Ok(Page::new(rows, limit, |row| row.id))
    }
}

/// Returns the merchant whose API token is `token`, if any.
///
/// # Errors
///
/// [`StoreError::Database`] when the store fails.
pub async fn merchant_for_token<S: Store>(
    store: &S,
    token: &str,
) -> Result<Option<Merchant>, StoreError> {
    store.merchant_by_token(&token::TokenHash::of(token)).await
}

/// Returns the page limit to use, rejecting 0 and values above the maximum.
fn page_limit(limit: Option<u32>) -> Result<u32, OperatorError> {
    match limit {
        None => Ok(DEFAULT_PAGE_LIMIT),
        Some(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => Ok(limit),
        Some(limit) => Err(invalid(
            "limit",
            format!("{limit} is out of range: expected 1 to {MAX_PAGE_LIMIT}"),
        )),
    }
}

fn validate_new_task(task: &NewTask) -> Result<(), OperatorError> {
    if task.kind.as_str().trim().is_empty() {
        return Err(invalid(
            "kind",
            "the task kind is empty: name the kind, such as retry_payment",
        ));
    }
    if task.max_attempts < 1 {
        return Err(invalid(
            "max_attempts",
            format!(
                "{} is below 1: a task needs at least one attempt",
                task.max_attempts
            ),
        ));
    }
    // PostgreSQL's text and jsonb cannot store NUL, which JSON allows.
    if task.kind.as_str().contains('\0') {
        return Err(invalid("kind", "the task kind contains a NUL character"));
    }
    if task
        .dedupe_key
        .as_deref()
        .is_some_and(|key| key.contains('\0'))
    {
        return Err(invalid(
            "dedupe_key",
            "the dedupe key contains a NUL character",
        ));
    }
    if task.payload.to_string().contains("\\u0000") {
        return Err(invalid(
            "payload",
            "the payload contains a NUL character (\\u0000), which PostgreSQL cannot store",
        ));
    }
    if !(0..=MAX_PRIORITY).contains(&task.priority) {
        return Err(invalid(
            "priority",
            format!(
                "{} is outside 0 to {MAX_PRIORITY}: use 0 for normal work and higher for urgent work",
                task.priority
            ),
        ));
    }
    if task.kind.as_str() == TaskKind::RETRY_PAYMENT {
        let payload: crate::task::RetryPayment = serde_json::from_value(task.payload.clone())
            .map_err(|err| {
                invalid(
                    "payload",
                    format!("a retry_payment payload needs invoice_id, attempt and idempotency_key: {err}"),
                )
            })?;
        if task.invoice_id.as_ref() != Some(&payload.invoice_id) {
            return Err(invalid(
                "invoice_id",
                format!(
                    "the task must name the payload's invoice {}",
                    payload.invoice_id
                ),
            ));
        }
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), OperatorError> {
    if name.trim().is_empty() {
        return Err(invalid("name", "the merchant name is empty"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            "the merchant name contains a control character such as NUL or a newline: use printable text",
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(
            "name",
            format!(
                "{} bytes is longer than the maximum of {MAX_NAME_LEN}",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// Checks that a time zone is in the IANA time zone database, such as `UTC`
/// or `America/Argentina/Buenos_Aires`.
fn validate_time_zone(zone: &str) -> Result<(), OperatorError> {
    parse_time_zone(zone)
        .map(|_| ())
        .map_err(|error| invalid("time_zone", error.to_string()))
}

/// Checks the policy's own rules, and bounds its schedule so that a typo
/// cannot queue a year of retries.
fn validate_policy(policy: &RecoveryPolicy) -> Result<(), OperatorError> {
    policy
        .validate()
        .map_err(|error| invalid("policy", error.to_string()))?;
    let retries = policy.max_retries();
    if usize::try_from(retries).unwrap_or(usize::MAX) > MAX_POLICY_RETRIES {
        return Err(invalid(
            "policy.schedule",
            format!("{retries} retries is more than the maximum of {MAX_POLICY_RETRIES}"),
        ));
    }
    let longest = match &policy.schedule {
        Schedule::Delays(delays) => delays.iter().max().copied(),
        Schedule::Spread { window, .. } => Some(*window),
    };
    if let Some(longest) = longest
        && longest > MAX_POLICY_DELAY
    {
        return Err(invalid(
            "policy.schedule",
            format!(
                "a delay or window of {} s is longer than the maximum of {} s (366 days)",
                longest.as_secs(),
                MAX_POLICY_DELAY.as_secs()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limit_rejects_zero_and_too_large() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE_LIMIT);
        assert_eq!(page_limit(Some(1)).unwrap(), 1);
        assert!(page_limit(Some(0)).is_err());
        let err = page_limit(Some(MAX_PAGE_LIMIT + 1)).unwrap_err();
        assert!(err.to_string().contains("1001"), "{err}");
    }

    #[test]
    fn time_zone_is_looked_up() {
        for zone in [
            "UTC",
            "Europe/Paris",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
        ] {
            assert!(validate_time_zone(zone).is_ok(), "{zone}");
        }
        for zone in ["", "Europe/", "/Paris", "Europe Paris", "Mars/Olympus"] {
            assert!(validate_time_zone(zone).is_err(), "{zone:?}");
        }
    }

    #[test]
    fn page_has_next_only_when_full() {
        let full = Page::new(vec![3, 2], 2, |n| *n);
        assert_eq!(full.next, Some(2));
        let partial = Page::new(vec![3], 2, |n| *n);
        assert_eq!(partial.next, None);
    }

    #[test]
    fn merchant_scope_allows_only_own_rows() {
        let own = MerchantId::new(1);
        let other = MerchantId::new(2);
        assert!(Scope::Merchant(own).allows(own));
        assert!(!Scope::Merchant(own).allows(other));
        assert!(Scope::Operator.allows(other));
        assert_eq!(Scope::Merchant(own).merchant(), Some(own));
        assert_eq!(Scope::Operator.merchant(), None);
    }
}
