//! Dashboard figures: task counts, recovered and lost totals, the recovery
//! rate, and the newest tasks and activity.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Operator, OperatorError};
use crate::activity::{Activity, ActivityFilter};
use crate::store::{Store, TaskCounts, TaskFilter};
use crate::task::Task;

/// How many tasks and activity rows the dashboard shows.
const RECENT_ROWS: u32 = 10;

/// The figures of a dashboard, of one merchant or of all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    /// Tasks per status.
    pub tasks: TaskCounts,
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
    /// Recovered invoices as a share of the recoveries that ended (recovered
    /// plus lost), from 0 to 1; `None` while none has ended.
    pub recovery_rate: Option<f64>,
    /// The newest tasks.
    pub recent_tasks: Vec<Task>,
    /// The newest activity.
    pub recent_activity: Vec<Activity>,
}

impl<S: Store> Operator<'_, S> {
    /// Returns the dashboard figures of the scope: of one merchant, or of
    /// every merchant for the operator.
    ///
    /// # Errors
    ///
    /// [`OperatorError::Store`] when the store fails.
    pub async fn dashboard(&self) -> Result<Dashboard, OperatorError> {
        let merchant = self.scope.merchant();
        let tasks = self.store.task_counts_of(merchant).await?;
        let metrics = self.store.daily_metrics(merchant).await?;

        let mut dashboard = Dashboard {
            tasks,
            recovered_count: 0,
            recovered_amounts: BTreeMap::new(),
            lost_count: 0,
            lost_amounts: BTreeMap::new(),
            failed_payments: 0,
            retries_attempted: 0,
            recovery_rate: None,
            recent_tasks: Vec::new(),
            recent_activity: Vec::new(),
        };
        for day in &metrics {
            let currency = day.currency.as_str().to_owned();
            dashboard.recovered_count += day.payments_recovered;
            dashboard.lost_count += day.payments_lost;
            dashboard.failed_payments += day.failed_payments;
            dashboard.retries_attempted += day.retries_attempted;
            *dashboard
                .recovered_amounts
                .entry(currency.clone())
                .or_default() += day.amount_recovered;
            *dashboard.lost_amounts.entry(currency).or_default() += day.amount_lost;
        }
        dashboard.recovery_rate = recovery_rate(dashboard.recovered_count, dashboard.lost_count);

        let recent = TaskFilter {
            merchant_id: merchant,
            limit: Some(RECENT_ROWS),
            ..TaskFilter::default()
        };
        dashboard.recent_tasks = self.store.list_tasks(&recent).await?;
        let recent = ActivityFilter {
            merchant_id: merchant,
            limit: Some(RECENT_ROWS),
            ..ActivityFilter::default()
        };
        dashboard.recent_activity = self.store.list_activity(&recent).await?;
        Ok(dashboard)
    }
}

/// Returns `recovered / (recovered + lost)`, or `None` when both are zero.
#[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
fn recovery_rate(recovered: i64, lost: i64) -> Option<f64> {
    let ended = recovered + lost;
    (ended > 0).then(|| recovered as f64 / ended as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_rate_over_ended_recoveries() {
        assert_eq!(recovery_rate(0, 0), None);
        assert_eq!(recovery_rate(1, 3), Some(0.25));
        assert_eq!(recovery_rate(2, 0), Some(1.0));
    }
}
