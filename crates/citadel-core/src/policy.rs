//! The recovery policy: which declines are worth retrying, and when.
//!
//! Everything here is pure: the engine passes in what happened and the
//! current time, and gets back a decision to record.
//!
//! A decline is *hard* when the issuer reported that the card must not be charged
//! again (stolen, lost, picked up, a wrong number, revoked authorization):
//! retrying such a card can get the merchant flagged by the card network, so it
//! is never retried. Everything else, including codes this table does not
//! know, is *soft* and follows the merchant's schedule.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::payment::Decline;

/// Decline codes that are never retried automatically.
///
/// Sources: Stripe's decline code reference marks these as "the customer
/// should not retry" or as fraud-related, and the card networks forbid
/// re-presenting them.
pub const HARD_DECLINE_CODES: &[&str] = &[
    "stolen_card",
    "lost_card",
    "pickup_card",
    "incorrect_number",
    "invalid_account",
    "restricted_card",
    "revocation_of_authorization",
    "revocation_of_all_authorizations",
    "security_violation",
    "fraudulent",
    "merchant_blacklist",
    "transaction_not_allowed",
    "authentication_required",
];

/// The advice code with which Stripe passes on a card network's instruction
/// never to retry the card.
pub const DO_NOT_TRY_AGAIN: &str = "do_not_try_again";

/// The treatment a decline gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineClass {
    /// Retrying may succeed later (insufficient funds, issuer unavailable).
    Soft,
    /// Must not be retried.
    Hard,
}

/// Classifies a decline: hard when its `decline_code` or `code` is in
/// [`HARD_DECLINE_CODES`], or its advice code is [`DO_NOT_TRY_AGAIN`].
///
/// # Examples
///
/// ```
/// use citadel_core::payment::Decline;
/// use citadel_core::policy::{classify, DeclineClass};
///
/// let stolen = Decline::with_decline_code("stolen_card");
/// assert_eq!(classify(&stolen), DeclineClass::Hard);
/// let funds = Decline::with_decline_code("insufficient_funds");
/// assert_eq!(classify(&funds), DeclineClass::Soft);
/// ```
pub fn classify(decline: &Decline) -> DeclineClass {
    let codes = [decline.decline_code.as_deref(), decline.code.as_deref()];
    let hard_code = codes
        .into_iter()
        .flatten()
        .any(|code| HARD_DECLINE_CODES.contains(&code));
    let hard = hard_code || decline.advice_code.as_deref() == Some(DO_NOT_TRY_AGAIN);
    if hard {
        DeclineClass::Hard
    } else {
        DeclineClass::Soft
    }
}

/// The action taken on an invoice after its last scheduled retry failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FinalAction {
    /// Leave the invoice open in Stripe (the default).
    #[default]
    LeaveOpen,
    /// Mark the invoice uncollectible.
    MarkUncollectible,
    /// Cancel the subscription the invoice belongs to.
    CancelSubscription,
}

/// A merchant's recovery policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPolicy {
    /// Delays before each retry, counted from the failure that scheduled it:
    /// the first entry is the wait after the original failure, the second the
    /// wait after the first retry failed, and so on. Their count is the number
    /// of retries. Default: 1, 3, 5 and 7 days.
    #[serde(with = "seconds_list")]
    pub retry_delays: Vec<Duration>,
    /// The action after the last retry failed. Default: leave the invoice
    /// open.
    #[serde(default)]
    pub final_action: FinalAction,
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl Default for RecoveryPolicy {
    fn default() -> Self {
        Self {
            retry_delays: vec![DAY, 3 * DAY, 5 * DAY, 7 * DAY],
            final_action: FinalAction::LeaveOpen,
        }
    }
}

impl RecoveryPolicy {
    /// Creates a policy with the given delays and the default final action.
    pub fn with_delays(retry_delays: Vec<Duration>) -> Self {
        Self {
            retry_delays,
            ..Self::default()
        }
    }

    /// Returns how many retries the policy makes.
    pub fn max_retries(&self) -> u32 {
        u32::try_from(self.retry_delays.len()).unwrap_or(u32::MAX)
    }

    /// Returns when retry number `attempt` (starting at 1) should run, after a
    /// failure at `failed_at`, or `None` when the schedule has no such retry.
    pub fn retry_time(&self, attempt: u32, failed_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        let delay = chrono::Duration::from_std(*self.retry_delays.get(index)?).ok()?;
        failed_at.checked_add_signed(delay)
    }
}

/// The policy's decision after a retry of an invoice was declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineDecision {
    /// Schedule retry number `attempt` at `run_at`.
    RetryAt {
        /// The number of the next retry.
        attempt: u32,
        /// When it runs.
        run_at: DateTime<Utc>,
    },
    /// Stop: the decline is hard.
    StopHardDecline,
    /// Stop: every retry of the schedule has been made.
    StopScheduleExhausted,
}

/// Decides what follows a declined retry number `attempt` at `now`.
pub fn after_decline(
    policy: &RecoveryPolicy,
    decline: &Decline,
    attempt: u32,
    now: DateTime<Utc>,
) -> DeclineDecision {
    if classify(decline) == DeclineClass::Hard {
        return DeclineDecision::StopHardDecline;
    }
    let next = attempt.saturating_add(1);
    match policy.retry_time(next, now) {
        Some(run_at) => DeclineDecision::RetryAt {
            attempt: next,
            run_at,
        },
        None => DeclineDecision::StopScheduleExhausted,
    }
}

/// Returns the wait before running a task again after a transient error (a
/// timeout, HTTP 5xx, a rate limit), with random jitter so that many tasks
/// hit by one outage do not all retry at the same moment.
///
/// With `retry_after` (Stripe's `Retry-After`), the wait is that value plus
/// up to 10% more. Without it, the wait is between half and all of
/// [`transient_backoff_ceiling`] for `attempts`.
pub fn transient_backoff(attempts: i32, retry_after: Option<Duration>) -> Duration {
    jittered_backoff(attempts, retry_after, fastrand::f64())
}

/// Returns [`transient_backoff`] for a given `draw` from `[0, 1)` in place
/// of a random one.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// use citadel_core::policy::jittered_backoff;
///
/// // Attempt 3 waits between 4 and 8 seconds.
/// assert_eq!(jittered_backoff(3, None, 0.0), Duration::from_secs(4));
/// assert_eq!(jittered_backoff(3, None, 0.5), Duration::from_secs(6));
/// // A Retry-After of 10 seconds waits between 10 and 11 seconds.
/// let wait = jittered_backoff(3, Some(Duration::from_secs(10)), 0.5);
/// assert_eq!(wait, Duration::from_millis(10_500));
/// ```
pub fn jittered_backoff(attempts: i32, retry_after: Option<Duration>, draw: f64) -> Duration {
    let draw = if (0.0..1.0).contains(&draw) {
        draw
    } else {
        0.0
    };
    if let Some(wait) = retry_after {
        return wait + wait.mul_f64(0.1 * draw);
    }
    let ceiling = transient_backoff_ceiling(attempts);
    let half = ceiling / 2;
    half + half.mul_f64(draw)
}

/// Returns the longest wait after a transient error on attempt `attempts`:
/// 2 seconds doubled per attempt, at most 10 minutes.
pub fn transient_backoff_ceiling(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 16)).unwrap_or(0);
    let seconds = 2u64.saturating_pow(exponent.max(1));
    Duration::from_secs(seconds.min(600))
}

mod seconds_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        delays: &[Duration],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(delays.iter().map(Duration::as_secs))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Duration>, D::Error> {
        let seconds = Vec::<u64>::deserialize(deserializer)?;
        Ok(seconds.into_iter().map(Duration::from_secs).collect())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).unwrap()
    }

    #[test]
    fn classification_table() {
        let cases = [
            (Some("stolen_card"), None, DeclineClass::Hard),
            (Some("lost_card"), None, DeclineClass::Hard),
            (Some("pickup_card"), None, DeclineClass::Hard),
            (None, Some("incorrect_number"), DeclineClass::Hard),
            (
                Some("insufficient_funds"),
                Some("card_declined"),
                DeclineClass::Soft,
            ),
            (
                Some("generic_decline"),
                Some("card_declined"),
                DeclineClass::Soft,
            ),
            (Some("some_future_code"), None, DeclineClass::Soft),
            (None, None, DeclineClass::Soft),
        ];
        for (decline_code, code, expected) in cases {
            let decline = Decline {
                code: code.map(str::to_owned),
                decline_code: decline_code.map(str::to_owned),
                ..Decline::default()
            };
            assert_eq!(classify(&decline), expected, "{decline_code:?} {code:?}");
        }
    }

    #[test]
    fn do_not_try_again_advice_is_hard() {
        let decline = Decline {
            decline_code: Some("generic_decline".to_owned()),
            advice_code: Some("do_not_try_again".to_owned()),
            ..Decline::default()
        };
        assert_eq!(classify(&decline), DeclineClass::Hard);

        let later = Decline {
            decline_code: Some("generic_decline".to_owned()),
            advice_code: Some("try_again_later".to_owned()),
            ..Decline::default()
        };
        assert_eq!(classify(&later), DeclineClass::Soft);
    }

    #[test]
    fn retry_times_follow_the_delays() {
        let policy =
            RecoveryPolicy::with_delays(vec![Duration::from_secs(10), Duration::from_secs(20)]);
        assert_eq!(policy.retry_time(1, at(100)), Some(at(110)));
        assert_eq!(policy.retry_time(2, at(100)), Some(at(120)));
        assert_eq!(policy.retry_time(3, at(100)), None);
        assert_eq!(policy.retry_time(0, at(100)), None);
    }

    #[test]
    fn soft_decline_schedules_next_retry() {
        let policy =
            RecoveryPolicy::with_delays(vec![Duration::from_secs(10), Duration::from_secs(20)]);
        let decline = Decline::with_decline_code("insufficient_funds");
        assert_eq!(
            after_decline(&policy, &decline, 1, at(1000)),
            DeclineDecision::RetryAt {
                attempt: 2,
                run_at: at(1020)
            }
        );
    }

    #[test]
    fn last_soft_decline_stops() {
        let policy = RecoveryPolicy::with_delays(vec![Duration::from_secs(10)]);
        let decline = Decline::with_decline_code("insufficient_funds");
        assert_eq!(
            after_decline(&policy, &decline, 1, at(0)),
            DeclineDecision::StopScheduleExhausted
        );
    }

    #[test]
    fn hard_decline_stops_at_once() {
        let policy = RecoveryPolicy::default();
        let decline = Decline::with_decline_code("lost_card");
        assert_eq!(
            after_decline(&policy, &decline, 1, at(0)),
            DeclineDecision::StopHardDecline
        );
    }

    #[test]
    fn backoff_ceiling_doubles_and_caps() {
        assert_eq!(transient_backoff_ceiling(1), Duration::from_secs(2));
        assert_eq!(transient_backoff_ceiling(3), Duration::from_secs(8));
        assert_eq!(transient_backoff_ceiling(40), Duration::from_secs(600));
    }

    #[test]
    fn backoff_jitter_stays_in_range() {
        assert_eq!(jittered_backoff(3, None, 0.0), Duration::from_secs(4));
        assert_eq!(jittered_backoff(40, None, 0.5), Duration::from_secs(450));
        assert_eq!(jittered_backoff(3, None, 7.0), Duration::from_secs(4));
        let retry_after = Some(Duration::from_secs(7));
        assert_eq!(
            jittered_backoff(3, retry_after, 0.0),
            Duration::from_secs(7)
        );
        for _ in 0..1000 {
            let wait = transient_backoff(5, None);
            assert!(wait >= Duration::from_secs(16), "{wait:?}");
            assert!(wait <= Duration::from_secs(32), "{wait:?}");
        }
    }

    #[test]
    fn backoff_jitter_spreads_retries() {
        let waits: std::collections::HashSet<Duration> =
            (0..100).map(|_| transient_backoff(5, None)).collect();
        assert!(waits.len() > 50, "only {} distinct waits", waits.len());
    }

    #[test]
    fn policy_serializes_delays_as_seconds() {
        let policy = RecoveryPolicy::with_delays(vec![Duration::from_secs(60)]);
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"retry_delays": [60], "final_action": "leave_open"})
        );
        let back: RecoveryPolicy = serde_json::from_value(json).unwrap();
        assert_eq!(back, policy);
    }
}
