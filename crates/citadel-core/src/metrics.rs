//! Daily metrics per merchant, day and currency.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::ids::MerchantId;
use crate::money::Currency;

/// Counts to add to one merchant's day in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsDelta {
    /// The merchant.
    pub merchant_id: MerchantId,
    /// The day counted on.
    pub day: NaiveDate,
    /// The currency of the amounts.
    pub currency: Currency,
    /// Invoices whose payment failed and opened a recovery.
    pub failed_payments: i64,
    /// Retries made (calls to Stripe that got a payment decision).
    pub retries_attempted: i64,
    /// Invoices recovered.
    pub payments_recovered: i64,
    /// Amount recovered, in minor units.
    pub amount_recovered: i64,
    /// Recoveries that ended without payment.
    pub payments_lost: i64,
    /// Amount lost, in minor units.
    pub amount_lost: i64,
}

impl MetricsDelta {
    /// Creates a delta of zeros.
    pub fn zero(merchant_id: MerchantId, day: NaiveDate, currency: Currency) -> Self {
        Self {
            merchant_id,
            day,
            currency,
            failed_payments: 0,
            retries_attempted: 0,
            payments_recovered: 0,
            amount_recovered: 0,
            payments_lost: 0,
            amount_lost: 0,
        }
    }
}

/// One merchant's metrics of one day in one currency, as stored.
pub type DailyMetrics = MetricsDelta;
