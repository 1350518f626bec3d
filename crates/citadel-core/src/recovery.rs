//! Recoveries: one per failed invoice, from the first failure to its end.
//!
//! A recovery is opened by `invoice.payment_failed` and ends as
//! [`RecoveryStatus::Recovered`] (the invoice got paid),
//! [`RecoveryStatus::Lost`] (a hard decline, the schedule used up, the invoice
//! voided or deleted, or the subscription deleted or canceled), or as
//! [`RecoveryStatus::Stopped`] when Stripe responds to a retry that the invoice
//! needs no payment any more. Every end is final: an event that
//! arrives later is noted in the activity ledger and changes nothing, so a paid
//! invoice stays paid whatever Stripe delivers after.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CustomerId, InvoiceId, MerchantId, SubscriptionId};
use crate::money::Money;
use crate::payment::Decline;

/// The stage a recovery is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryStatus {
    /// A decline for the invoice arrived (`charge.failed`) before
    /// `invoice.payment_failed`; nothing is scheduled yet.
    AwaitingInvoice,
    /// Retries are scheduled or running.
    Open,
    /// The invoice was paid.
    Recovered,
    /// The recovery ended without payment.
    Lost,
    /// Stripe responded to a retry that the invoice is already paid, void,
    /// uncollectible or deleted. The recovery ended outside Citadel, so it
    /// counts as neither recovered nor lost.
    Stopped,
}

impl RecoveryStatus {
    /// Returns the name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            RecoveryStatus::AwaitingInvoice => "awaiting_invoice",
            RecoveryStatus::Open => "open",
            RecoveryStatus::Recovered => "recovered",
            RecoveryStatus::Lost => "lost",
            RecoveryStatus::Stopped => "stopped",
        }
    }

    /// Returns whether the recovery has ended.
    pub const fn is_closed(self) -> bool {
        matches!(
            self,
            RecoveryStatus::Recovered | RecoveryStatus::Lost | RecoveryStatus::Stopped
        )
    }
}

impl fmt::Display for RecoveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error returned for a recovery status name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid recovery status {0:?}: expected awaiting_invoice, open, recovered, lost or stopped"
)]
pub struct UnknownRecoveryStatus(pub String);

impl FromStr for RecoveryStatus {
    type Err = UnknownRecoveryStatus;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        [
            RecoveryStatus::AwaitingInvoice,
            RecoveryStatus::Open,
            RecoveryStatus::Recovered,
            RecoveryStatus::Lost,
            RecoveryStatus::Stopped,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
        .ok_or_else(|| UnknownRecoveryStatus(value.to_owned()))
    }
}

/// The recovery of one invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// The merchant that issued the invoice.
    pub merchant_id: MerchantId,
    /// The invoice.
    pub invoice_id: InvoiceId,
    /// The recovery's stage.
    pub status: RecoveryStatus,
    /// The customer billed, once known.
    pub customer_id: Option<CustomerId>,
    /// The subscription the invoice belongs to, once known.
    pub subscription_id: Option<SubscriptionId>,
    /// The amount due when the recovery opened.
    pub amount_due: Option<Money>,
    /// The amount recovered, once paid.
    pub amount_recovered: Option<Money>,
    /// How many retries Citadel has made (calls that got a payment decision).
    pub retries_made: i32,
    /// The last decline reason seen for the invoice.
    pub last_decline: Option<Decline>,
    /// The creation time of the newest event applied to this recovery.
    pub last_event_at: DateTime<Utc>,
    /// The reason the recovery ended, once it has.
    pub close_reason: Option<String>,
    /// When the recovery was opened.
    pub opened_at: DateTime<Utc>,
    /// When the recovery ended.
    pub closed_at: Option<DateTime<Utc>>,
}

impl Recovery {
    /// Creates a recovery that has seen nothing yet but the event at
    /// `event_time`.
    pub fn new(
        merchant_id: MerchantId,
        invoice_id: InvoiceId,
        event_time: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            merchant_id,
            invoice_id,
            status: RecoveryStatus::AwaitingInvoice,
            customer_id: None,
            subscription_id: None,
            amount_due: None,
            amount_recovered: None,
            retries_made: 0,
            last_decline: None,
            last_event_at: event_time,
            close_reason: None,
            opened_at: now,
            closed_at: None,
        }
    }

    /// Ends the recovery with `status` and `reason` at `now`.
    pub fn close(&mut self, status: RecoveryStatus, reason: impl Into<String>, now: DateTime<Utc>) {
        self.status = status;
        self.close_reason = Some(reason.into());
        self.closed_at = Some(now);
    }

    /// Records that an event created at `event_time` was applied.
    pub fn saw_event(&mut self, event_time: DateTime<Utc>) {
        self.last_event_at = self.last_event_at.max(event_time);
    }
}
