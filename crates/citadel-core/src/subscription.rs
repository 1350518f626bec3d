//! The newest known state of each subscription.
//!
//! Stripe delivers `customer.subscription.created`, `.updated` and
//! `.deleted` in no set order, so the engine keeps, per subscription, the
//! status of the newest event it applied and that event's creation time. An
//! older event never replaces a newer state, and a canceled subscription
//! stays canceled, because Stripe never reactivates one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{MerchantId, SubscriptionId};

/// The status Stripe gives a subscription that has ended for good.
pub const CANCELED: &str = "canceled";

/// The status of a subscription whose first invoice was never paid; it has
/// ended for good too.
pub const INCOMPLETE_EXPIRED: &str = "incomplete_expired";

/// A subscription's newest known state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    /// The merchant the subscription belongs to.
    pub merchant_id: MerchantId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Stripe's `status`, such as `active`, `past_due` or `canceled`.
    pub status: String,
    /// The creation time of the event the status comes from.
    pub last_event_at: DateTime<Utc>,
}

impl SubscriptionState {
    /// Returns whether the subscription has ended for good, so no invoice of
    /// it is retried.
    pub fn is_ended(&self) -> bool {
        is_ended_status(&self.status)
    }

    /// Returns whether a status seen in an event created at `event_at`
    /// replaces this state. A newer event replaces it, an older one never
    /// does, and an ended subscription is never replaced. Of two events
    /// created in the same second, the one that ends the subscription wins.
    pub fn is_replaced_by(&self, status: &str, event_at: DateTime<Utc>) -> bool {
        if self.is_ended() {
            return false;
        }
        event_at > self.last_event_at || (event_at == self.last_event_at && is_ended_status(status))
    }
}

/// Returns whether a Stripe subscription status means the subscription has
/// ended for good.
pub fn is_ended_status(status: &str) -> bool {
    status == CANCELED || status == INCOMPLETE_EXPIRED
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, seconds: i64) -> SubscriptionState {
        SubscriptionState {
            merchant_id: MerchantId::new(1),
            subscription_id: SubscriptionId::parse("sub_1").unwrap(),
            status: status.to_owned(),
            last_event_at: at(seconds),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    #[test]
    fn newer_event_replaces_state() {
        assert!(state("active", 10).is_replaced_by("past_due", at(11)));
    }

    #[test]
    fn older_event_keeps_state() {
        assert!(!state("past_due", 10).is_replaced_by("active", at(9)));
    }

    #[test]
    fn same_second_keeps_state_unless_it_ends() {
        assert!(!state("past_due", 10).is_replaced_by("active", at(10)));
        assert!(state("past_due", 10).is_replaced_by(CANCELED, at(10)));
    }

    #[test]
    fn ended_subscription_stays_ended() {
        assert!(!state(CANCELED, 10).is_replaced_by("active", at(20)));
        assert!(!state(INCOMPLETE_EXPIRED, 10).is_replaced_by("active", at(20)));
    }
}
