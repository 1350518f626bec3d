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
    /// Seconds from opening to payment, summed over the recoveries counted
    /// in `payments_recovered`.
    pub recovery_seconds: i64,
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
            recovery_seconds: 0,
        }
    }

    /// Returns the share of failed payments recovered, from 0 to 1, or
    /// `None` when no payment failed. Recoveries are counted on the day they
    /// end, so one day's rate can exceed 1: sum several days first.
    pub fn recovery_rate(&self) -> Option<f64> {
        if self.failed_payments <= 0 {
            return None;
        }
        // An i64 count converts to f64 exactly up to 2^53.
        #[allow(clippy::cast_precision_loss)]
        let rate = self.payments_recovered as f64 / self.failed_payments as f64;
        Some(rate)
    }

    /// Returns the mean time from a recovery's opening to its payment, or
    /// `None` when nothing was recovered.
    pub fn mean_time_to_recovery(&self) -> Option<std::time::Duration> {
        if self.payments_recovered <= 0 {
            return None;
        }
        let seconds = u64::try_from(self.recovery_seconds / self.payments_recovered).ok()?;
        Some(std::time::Duration::from_secs(seconds))
    }
}

/// One merchant's metrics of one day in one currency, as stored.
pub type DailyMetrics = MetricsDelta;

#[cfg(test)]
mod tests {
    use super::*;

    fn day(failed: i64, recovered: i64, recovery_seconds: i64) -> DailyMetrics {
        let mut metrics = MetricsDelta::zero(
            MerchantId::new(1),
            NaiveDate::from_ymd_opt(2026, 11, 18).unwrap(),
            Currency::parse("usd").unwrap(),
        );
        metrics.failed_payments = failed;
        metrics.payments_recovered = recovered;
        metrics.recovery_seconds = recovery_seconds;
        metrics
    }

    #[test]
    fn recovery_rate_divides_recovered_by_failed() {
        assert_eq!(day(4, 1, 0).recovery_rate(), Some(0.25));
        assert_eq!(day(0, 1, 0).recovery_rate(), None);
    }

    #[test]
    fn mean_time_to_recovery_averages_seconds() {
        let mean = day(2, 2, 7200).mean_time_to_recovery();

        assert_eq!(mean, Some(std::time::Duration::from_secs(3600)));
        assert_eq!(day(2, 0, 0).mean_time_to_recovery(), None);
    }
}
