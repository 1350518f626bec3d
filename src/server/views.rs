//! The JSON bodies of the HTTP API, with their OpenAPI schemas.
//!
//! They are kept apart from the core types so the wire format is stated in
//! one place and a change to a core type cannot change the API unnoticed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use citadel_core::activity::Activity;
use citadel_core::merchant::Merchant;
use citadel_core::operator::{Dashboard, Health};
use citadel_core::policy::RecoveryPolicy;
use citadel_core::store::TaskCounts;
use citadel_core::task::Task;

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The failure and the next step.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code: `invalid_request`, `unauthorized`,
    /// `forbidden`, `not_found`, `conflict`, `payload_too_large`,
    /// `unsupported_media_type`, `method_not_allowed`, `unavailable` or
    /// `internal`.
    pub code: String,
    /// A sentence for people: what failed, on which value, what to do.
    pub message: String,
}

/// A running task's lease, without its token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaseView {
    /// The worker holding it.
    pub owner: String,
    /// When it runs out.
    pub expires_at: DateTime<Utc>,
}

/// A task.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    /// The task's id.
    pub id: i64,
    /// The merchant it works for.
    pub merchant_id: i64,
    /// The kind of work, such as `retry_payment`.
    pub kind: String,
    /// The invoice it works on, if any.
    pub invoice_id: Option<String>,
    /// Kind-specific input.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// `pending`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// When it becomes due.
    pub run_at: DateTime<Utc>,
    /// Claims so far.
    pub attempts: i32,
    /// Claims allowed before it fails.
    pub max_attempts: i32,
    /// The error of the last failed run.
    pub last_error: Option<String>,
    /// The lease, while running.
    pub lease: Option<LeaseView>,
    /// The key that keeps a second live task of the same work out.
    pub dedupe_key: Option<String>,
    /// Higher runs first among the merchant's due tasks.
    pub priority: i16,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Task> for TaskView {
    fn from(task: Task) -> Self {
        Self {
            id: task.id.get(),
            merchant_id: task.merchant_id.get(),
            kind: task.kind.as_str().to_owned(),
            invoice_id: task.invoice_id.map(|id| id.to_string()),
            payload: task.payload,
            status: task.status.as_str().to_owned(),
            run_at: task.run_at,
            attempts: task.attempts,
            max_attempts: task.max_attempts,
            last_error: task.last_error,
            lease: task.lease.map(|lease| LeaseView {
                owner: lease.owner,
                expires_at: lease.expires_at,
            }),
            dedupe_key: task.dedupe_key,
            priority: task.priority,
            created_at: task.created_at,
            updated_at: task.updated_at,
        }
    }
}

/// A page of tasks, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    /// The tasks.
    pub items: Vec<TaskView>,
    /// Pass as `before` to get the next page; `null` on the last page.
    pub next_before: Option<i64>,
}

/// A task claimed by an external worker, with the token its completion
/// must send.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimedTask {
    /// The task, now running.
    pub task: TaskView,
    /// The lease token to send to `POST /api/worker/complete/{id}`.
    pub lease_token: uuid::Uuid,
}

/// The claimed tasks.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    /// The tasks, oldest due first; empty when none is due.
    pub tasks: Vec<ClaimedTask>,
}

/// How many tasks were deleted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedCount {
    /// The number of tasks deleted.
    pub deleted: u64,
}

/// A merchant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MerchantView {
    /// The merchant's id.
    pub id: i64,
    /// A display name.
    pub name: String,
    /// The Stripe connected account (`acct_…`); `null` for the platform's
    /// own account.
    pub account_id: Option<String>,
    /// `active`, or `paused` while its tasks are not claimed.
    pub status: String,
    /// The recovery policy: `schedule`, `retry_hour`, `declines`, `passive`
    /// and `final_action`, as docs/recovery-policy.md describes.
    #[schema(value_type = Object)]
    pub policy: RecoveryPolicy,
    /// An IANA time zone name.
    pub time_zone: String,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

impl From<Merchant> for MerchantView {
    fn from(merchant: Merchant) -> Self {
        Self {
            id: merchant.id.get(),
            name: merchant.name,
            account_id: merchant.account_id.map(|id| id.to_string()),
            status: merchant.status.as_str().to_owned(),
            policy: merchant.policy,
            time_zone: merchant.time_zone,
            created_at: merchant.created_at,
        }
    }
}

/// A page of merchants, by id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MerchantPage {
    /// The merchants.
    pub items: Vec<MerchantView>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_after: Option<i64>,
}

/// A merchant just registered, with its API token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedMerchantView {
    /// The merchant.
    pub merchant: MerchantView,
    /// The merchant's bearer token. It is shown only in this response; the
    /// server keeps only its SHA-256 digest.
    pub token: String,
}

/// An entry of the activity ledger.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActivityView {
    /// The entry's id; higher ids were written later.
    pub id: i64,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// The merchant concerned.
    pub merchant_id: i64,
    /// The kind of event, such as `retry_declined`.
    pub kind: String,
    /// The task concerned.
    pub task_id: Option<i64>,
    /// The invoice concerned.
    pub invoice_id: Option<String>,
    /// The Stripe event that caused it.
    pub event_id: Option<String>,
    /// A sentence stating the decision and its reason.
    pub message: String,
    /// Structured details, such as the decline code.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<Activity> for ActivityView {
    fn from(row: Activity) -> Self {
        Self {
            id: row.id.get(),
            created_at: row.created_at,
            merchant_id: row.entry.merchant_id.get(),
            kind: row.entry.kind.as_str().to_owned(),
            task_id: row.entry.task_id.map(|id| id.get()),
            invoice_id: row.entry.invoice_id.map(|id| id.to_string()),
            event_id: row.entry.event_id.map(|id| id.to_string()),
            message: row.entry.message,
            details: row.entry.details,
        }
    }
}

/// A page of the activity ledger, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActivityPage {
    /// The entries.
    pub items: Vec<ActivityView>,
    /// Pass as `before` to get the next page; `null` on the last page.
    pub next_before: Option<i64>,
}

/// Tasks per status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskCountsView {
    /// Pending tasks.
    pub pending: i64,
    /// Running tasks.
    pub running: i64,
    /// Completed tasks.
    pub completed: i64,
    /// Failed tasks.
    pub failed: i64,
    /// Cancelled tasks.
    pub cancelled: i64,
}

impl From<TaskCounts> for TaskCountsView {
    fn from(counts: TaskCounts) -> Self {
        Self {
            pending: counts.pending,
            running: counts.running,
            completed: counts.completed,
            failed: counts.failed,
            cancelled: counts.cancelled,
        }
    }
}

/// Dashboard figures of the caller's scope.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DashboardView {
    /// Tasks per status.
    pub tasks: TaskCountsView,
    /// Invoices recovered.
    pub recovered_count: i64,
    /// Amounts recovered, in minor units per lowercase currency code.
    pub recovered_amounts: BTreeMap<String, i64>,
    /// Recoveries that ended without payment.
    pub lost_count: i64,
    /// Amounts lost, in minor units per lowercase currency code.
    pub lost_amounts: BTreeMap<String, i64>,
    /// Failed payments that opened a recovery.
    pub failed_payments: i64,
    /// Retries made.
    pub retries_attempted: i64,
    /// Recovered as a share of ended recoveries, 0 to 1; `null` while none
    /// has ended.
    pub recovery_rate: Option<f64>,
    /// The 10 newest tasks.
    pub recent_tasks: Vec<TaskView>,
    /// The 10 newest activity entries.
    pub recent_activity: Vec<ActivityView>,
}

impl From<Dashboard> for DashboardView {
    fn from(dashboard: Dashboard) -> Self {
        Self {
            tasks: dashboard.tasks.into(),
            recovered_count: dashboard.recovered_count,
            recovered_amounts: dashboard.recovered_amounts,
            lost_count: dashboard.lost_count,
            lost_amounts: dashboard.lost_amounts,
            failed_payments: dashboard.failed_payments,
            retries_attempted: dashboard.retries_attempted,
            recovery_rate: dashboard.recovery_rate,
            recent_tasks: dashboard.recent_tasks.into_iter().map(Into::into).collect(),
            recent_activity: dashboard
                .recent_activity
                .into_iter()
                .map(Into::into)
                .collect(),
        }
    }
}

/// The health of the server and its database.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthView {
    /// `ok` when the database is reachable and its schema is current, else
    /// `unavailable`.
    pub status: String,
    /// Whether the database was reachable.
    pub database_reachable: bool,
    /// Whether every migration of this build is applied.
    pub migrations_current: bool,
    /// Versions of this build's migrations the database lacks.
    pub pending_migrations: Vec<i64>,
    /// Running workers whose last heartbeat is at most 3 minutes old; `null`
    /// when the workers could not be listed.
    pub workers_alive: Option<u64>,
    /// Seconds since the oldest due pending task became due; `null` when none
    /// is due.
    pub oldest_due_task_age_seconds: Option<i64>,
    /// The failed check's error, if any.
    pub error: Option<String>,
}

impl From<Health> for HealthView {
    fn from(health: Health) -> Self {
        Self {
            status: if health.is_healthy() {
                "ok"
            } else {
                "unavailable"
            }
            .to_owned(),
            database_reachable: health.database_reachable,
            migrations_current: health.migrations_current,
            pending_migrations: health.pending_migrations,
            workers_alive: health.workers_alive,
            oldest_due_task_age_seconds: health.oldest_due_task_age_seconds,
            error: health.error,
        }
    }
}

/// The engine's outcome for a webhook event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookResponse {
    /// `applied`, `duplicate` (recorded before) or `ignored` (a type the
    /// engine does not act on). An event whose account has no merchant gets
    /// 422 `unknown_account` instead, so that Stripe redelivers it.
    pub outcome: String,
}

/// A task to queue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaskRequest {
    /// The merchant it works for; a merchant token may name only its own.
    pub merchant_id: i64,
    /// The kind of work, such as `retry_payment` or a kind of your own.
    pub kind: String,
    /// The invoice it works on.
    pub invoice_id: Option<String>,
    /// Kind-specific input; `{}` when absent. A `retry_payment` task needs
    /// `invoice_id`, `attempt` and `idempotency_key`.
    #[schema(value_type = Object)]
    pub payload: Option<serde_json::Value>,
    /// When it becomes due; now when absent.
    pub run_at: Option<DateTime<Utc>>,
    /// Claims allowed before it fails; 8 when absent.
    pub max_attempts: Option<i32>,
    /// A key that keeps a second live task of the same work out.
    pub dedupe_key: Option<String>,
    /// Higher runs first among the merchant's due tasks, from 0 to 9; 0 when
    /// absent.
    pub priority: Option<i16>,
}

/// A merchant to register.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchantRequest {
    /// A display name, at most 200 bytes.
    pub name: String,
    /// The Stripe connected account (`acct_…`); absent for the platform's own
    /// account.
    pub account_id: Option<String>,
    /// The recovery policy; Citadel's default (1, 3, 5 and 7 days) when
    /// absent.
    #[schema(value_type = Object)]
    pub policy: Option<RecoveryPolicy>,
    /// An IANA time zone name; `UTC` when absent.
    pub time_zone: Option<String>,
}

/// A change to a merchant; absent fields stay as they are.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMerchantRequest {
    /// The new recovery policy, for retries scheduled from now on.
    #[schema(value_type = Object)]
    pub policy: Option<RecoveryPolicy>,
    /// `paused` stops the claim of the merchant's tasks; `active` resumes it.
    pub status: Option<String>,
}

/// An external worker's claim.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequestBody {
    /// The worker's id, stored as the lease owner.
    pub worker_id: String,
    /// The kinds of task the worker runs; `["retry_payment"]` when absent.
    pub kinds: Option<Vec<String>>,
    /// At most this many tasks, 1 to 100; 10 when absent.
    pub limit: Option<u32>,
    /// The lease, in seconds from 1 to 3600; 300 when absent.
    pub lease_seconds: Option<u64>,
}

/// An external worker's report on a task it claimed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequestBody {
    /// The lease token returned by the claim.
    pub lease_token: uuid::Uuid,
    /// `completed`, `retry` (run again at `run_at`, now when absent) or
    /// `failed` (stop for good).
    pub outcome: String,
    /// The reason the run did not finish; required for `retry` and `failed`.
    pub error: Option<String>,
    /// When to run again, for `retry`.
    pub run_at: Option<DateTime<Utc>>,
}
