//! The recovery policy: which declines are worth retrying, when, and what
//! happens after the last retry.
//!
//! Everything here is pure: the engine passes in what happened and the
//! current time, and gets back a decision to record.
//!
//! - [`classify_with`] sorts a decline into never retry or retry, with a
//!   reason for the activity ledger, from a table and the merchant's
//!   [`DeclineOverrides`].
//! - [`Schedule`] and [`RecoveryPolicy::retry_time`] place each retry: a list
//!   of delays or N tries spread over a window, moved to the merchant's
//!   preferred local hour and stored in UTC.
//! - [`CardCap`] limits attempts per card across all merchants.
//! - [`FinalAction`] is what Citadel does on the connected account once the
//!   schedule is used up, and [`RecoveryPolicy::passive`] turns retrying off.

mod cap;
mod classify;
mod schedule;

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

pub use cap::{CapCheck, CardCap, DEFAULT_CAP_ATTEMPTS, DEFAULT_CAP_WINDOW, InvalidCardCap};
pub use classify::{
    CONFIGURABLE_CODES, Classification, DO_NOT_TRY_AGAIN, DeclineClass, DeclineOverrides,
    ForbiddenRetryOverride, MASTERCARD_DO_NOT_RETRY, NEVER_RETRY_CODES, RETRY_CODES, classify,
    classify_with,
};
pub use schedule::{DEFAULT_TRIES, DEFAULT_WINDOW, RetryClock, Schedule, at_local_hour};

use crate::payment::Decline;

/// The action taken on an invoice after its last scheduled retry failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FinalAction {
    /// Leave the invoice open in Stripe (the default).
    #[default]
    LeaveOpen,
    /// Mark the invoice uncollectible
    /// (`POST /v1/invoices/{id}/mark_uncollectible`).
    MarkUncollectible,
    /// Cancel the subscription the invoice belongs to
    /// (`DELETE /v1/subscriptions/{id}`).
    CancelSubscription,
}

impl FinalAction {
    /// Returns the name used in JSON and the activity ledger.
    pub const fn as_str(self) -> &'static str {
        match self {
            FinalAction::LeaveOpen => "leave_open",
            FinalAction::MarkUncollectible => "mark_uncollectible",
            FinalAction::CancelSubscription => "cancel_subscription",
        }
    }
}

impl std::fmt::Display for FinalAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The time after the last retry's nominal time at which an open recovery is
/// closed as lost: 1 day, so the last retry's outcome can arrive first.
pub const WINDOW_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// A merchant's recovery policy, stored as JSON in `merchants.policy`.
///
/// Policies stored before schedules and overrides existed
/// (`{"retry_delays": [...], "final_action": ...}`) still load: their delays
/// become [`Schedule::Delays`], and every other field takes its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PolicyJson")]
pub struct RecoveryPolicy {
    /// When each retry runs. Default: 8 tries spread over 2 weeks (Smart
    /// Retries make at most 8).
    pub schedule: Schedule,
    /// The local hour (0 to 23, in the merchant's time zone) at which
    /// retries run, or `None` to run each at its nominal time. Default:
    /// `None`.
    pub retry_hour: Option<u8>,
    /// The merchant's changes to the decline table. Default: none.
    #[serde(default)]
    pub declines: DeclineOverrides,
    /// Whether Citadel only records and reports, and never retries: for
    /// merchants who keep Stripe's own Smart Retries on. Default: `false`.
    #[serde(default)]
    pub passive: bool,
    /// The action after the last retry failed. Default: leave the invoice
    /// open.
    #[serde(default)]
    pub final_action: FinalAction,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        Self {
            schedule: Schedule::default(),
            retry_hour: None,
            declines: DeclineOverrides::default(),
            passive: false,
            final_action: FinalAction::LeaveOpen,
        }
    }
}

/// An error returned for a policy that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPolicy {
    /// The retry hour is not an hour of the day.
    #[error("invalid retry_hour {0}: expected an hour from 0 to 23 in the merchant's time zone")]
    RetryHour(u8),
    /// A `retry` override names a code that is never retried.
    #[error(transparent)]
    Override(#[from] ForbiddenRetryOverride),
}

impl RecoveryPolicy {
    /// Creates a policy with the given delays and every other field at its
    /// default.
    pub fn with_delays(retry_delays: Vec<Duration>) -> Self {
        Self {
            schedule: Schedule::Delays(retry_delays),
            ..Self::default()
        }
    }

    /// Checks the retry hour and the decline overrides.
    ///
    /// # Errors
    ///
    /// [`InvalidPolicy`] naming the value to fix.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        if let Some(hour) = self.retry_hour
            && hour > 23
        {
            return Err(InvalidPolicy::RetryHour(hour));
        }
        self.declines.validate()?;
        Ok(())
    }

    /// Returns how many retries the policy makes.
    pub fn max_retries(&self) -> u32 {
        self.schedule.max_retries()
    }

    /// Returns when retry number `attempt` (from 1) runs, or `None` when the
    /// schedule has no such retry.
    ///
    /// The result is never before `clock.now`: a nominal time that has
    /// passed becomes now. With a [`RecoveryPolicy::retry_hour`], it then
    /// moves forward to the next time that hour starts in the merchant's
    /// time zone.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use chrono::{TimeZone, Utc};
    /// use citadel_core::policy::{RecoveryPolicy, RetryClock};
    ///
    /// let mut policy = RecoveryPolicy::with_delays(vec![Duration::from_secs(3600)]);
    /// policy.retry_hour = Some(9);
    /// let now = Utc.with_ymd_and_hms(2026, 7, 1, 12, 0, 0).unwrap();
    /// let clock = RetryClock { opened_at: now, now, time_zone: chrono_tz::Asia::Tokyo };
    /// // 13:00 UTC is 22:00 in Tokyo; the next 09:00 there is 00:00 UTC.
    /// let expected = Utc.with_ymd_and_hms(2026, 7, 2, 0, 0, 0).unwrap();
    /// assert_eq!(policy.retry_time(1, &clock), Some(expected));
    /// assert_eq!(policy.retry_time(2, &clock), None);
    /// ```
    pub fn retry_time(&self, attempt: u32, clock: &RetryClock) -> Option<DateTime<Utc>> {
        let nominal = self.schedule.nominal_time(attempt, clock)?.max(clock.now);
        Some(match self.retry_hour {
            Some(hour) => at_local_hour(nominal, hour, clock.time_zone),
            None => nominal,
        })
    }

    /// Returns when an open recovery that opened at `opened_at` is closed as
    /// lost, whatever became of its retries: after the schedule's span, a
    /// day per retry for the preferred hour, and [`WINDOW_GRACE`].
    ///
    /// NOTE: a retry postponed by the card cap or rescheduled after errors
    /// can still be pending then; closing the recovery cancels it.
    pub fn window_end(&self, opened_at: DateTime<Utc>) -> DateTime<Utc> {
        let hour_shift = if self.retry_hour.is_some() {
            WINDOW_GRACE.saturating_mul(self.max_retries())
        } else {
            Duration::ZERO
        };
        let total = self
            .schedule
            .span()
            .saturating_add(hour_shift)
            .saturating_add(WINDOW_GRACE);
        chrono::Duration::from_std(total)
            .ok()
            .and_then(|total| opened_at.checked_add_signed(total))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// The JSON of a stored policy, in the current shape or the first one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyJson {
    #[serde(default)]
    schedule: Option<Schedule>,
    /// The first shape's delays, in seconds.
    #[serde(default, with = "optional_seconds_list")]
    retry_delays: Option<Vec<Duration>>,
    #[serde(default)]
    retry_hour: Option<u8>,
    #[serde(default)]
    declines: DeclineOverrides,
    #[serde(default)]
    passive: bool,
    #[serde(default)]
    final_action: FinalAction,
}

impl TryFrom<PolicyJson> for RecoveryPolicy {
    type Error = InvalidPolicy;

    fn try_from(json: PolicyJson) -> Result<Self, Self::Error> {
        let schedule = match (json.schedule, json.retry_delays) {
            (Some(schedule), _) => schedule,
            (None, Some(delays)) => Schedule::Delays(delays),
            (None, None) => Schedule::default(),
        };
        let policy = RecoveryPolicy {
            schedule,
            retry_hour: json.retry_hour,
            declines: json.declines,
            passive: json.passive,
            final_action: json.final_action,
        };
        policy.validate()?;
        Ok(policy)
    }
}

/// Parses an IANA time zone name such as `Asia/Tokyo`.
///
/// # Errors
///
/// [`UnknownTimeZone`] naming the value.
pub fn parse_time_zone(name: &str) -> Result<Tz, UnknownTimeZone> {
    name.parse::<Tz>()
        .map_err(|_| UnknownTimeZone(name.to_owned()))
}

/// An error returned for a time zone name the IANA database does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?}: use an IANA name such as Europe/Paris or UTC")]
pub struct UnknownTimeZone(pub String);

/// The policy's decision after a retry of an invoice was declined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeclineDecision {
    /// Schedule retry number `attempt` at `run_at`.
    RetryAt {
        /// The number of the next retry.
        attempt: u32,
        /// When it runs.
        run_at: DateTime<Utc>,
        /// Why the decline is retried.
        reason: String,
    },
    /// Stop: the decline is never retried.
    StopHardDecline {
        /// Why.
        reason: String,
    },
    /// Stop: every retry of the schedule has been made.
    StopScheduleExhausted {
        /// Why the decline would otherwise have been retried.
        reason: String,
    },
}

/// Decides what follows a declined retry number `attempt`, with the
/// merchant's overrides and schedule.
pub fn after_decline(
    policy: &RecoveryPolicy,
    decline: &Decline,
    attempt: u32,
    clock: &RetryClock,
) -> DeclineDecision {
    let Classification { class, reason } = classify_with(decline, &policy.declines);
    if class == DeclineClass::Hard {
        return DeclineDecision::StopHardDecline { reason };
    }
    let next = attempt.saturating_add(1);
    match policy.retry_time(next, clock) {
        Some(run_at) => DeclineDecision::RetryAt {
            attempt: next,
            run_at,
            reason,
        },
        None => DeclineDecision::StopScheduleExhausted { reason },
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

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

mod optional_seconds_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<Duration>>, D::Error> {
        let seconds = Option::<Vec<u64>>::deserialize(deserializer)?;
        Ok(seconds.map(|list| list.into_iter().map(Duration::from_secs).collect()))
    }
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
    use chrono_tz::UTC;
    use proptest::prelude::*;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).unwrap()
    }

    fn clock(now: i64) -> RetryClock {
        RetryClock {
            opened_at: at(0),
            now: at(now),
            time_zone: UTC,
        }
    }

    fn delays(seconds: &[u64]) -> RecoveryPolicy {
        RecoveryPolicy::with_delays(seconds.iter().copied().map(Duration::from_secs).collect())
    }

    #[test]
    fn retry_times_follow_the_delays() {
        let policy = delays(&[10, 20]);
        assert_eq!(policy.retry_time(1, &clock(100)), Some(at(110)));
        assert_eq!(policy.retry_time(2, &clock(100)), Some(at(120)));
        assert_eq!(policy.retry_time(3, &clock(100)), None);
        assert_eq!(policy.retry_time(0, &clock(100)), None);
    }

    #[test]
    fn late_spread_retry_runs_now() {
        let policy = RecoveryPolicy::default();
        // Retry 1 is nominally 42 hours after opening; at 100 hours it is due now.
        assert_eq!(
            policy.retry_time(1, &clock(100 * 3600)),
            Some(at(100 * 3600))
        );
    }

    #[test]
    fn soft_decline_schedules_next_retry() {
        let policy = delays(&[10, 20]);
        let decline = Decline::with_decline_code("insufficient_funds");
        assert_eq!(
            after_decline(&policy, &decline, 1, &clock(1000)),
            DeclineDecision::RetryAt {
                attempt: 2,
                run_at: at(1020),
                reason: "insufficient_funds is retried (decline table)".to_owned(),
            }
        );
    }

    #[test]
    fn last_soft_decline_stops() {
        let policy = delays(&[10]);
        let decline = Decline::with_decline_code("insufficient_funds");
        assert!(matches!(
            after_decline(&policy, &decline, 1, &clock(0)),
            DeclineDecision::StopScheduleExhausted { .. }
        ));
    }

    #[test]
    fn hard_decline_stops_at_once() {
        let policy = RecoveryPolicy::default();
        let decline = Decline::with_decline_code("lost_card");
        assert_eq!(
            after_decline(&policy, &decline, 1, &clock(0)),
            DeclineDecision::StopHardDecline {
                reason: "lost_card is never retried (decline table)".to_owned()
            }
        );
    }

    #[test]
    fn merchant_override_stops_configurable_code() {
        let mut policy = delays(&[10, 10]);
        policy.declines.never_retry = vec!["do_not_honor".to_owned()];
        let decline = Decline::with_decline_code("do_not_honor");
        assert!(matches!(
            after_decline(&policy, &decline, 1, &clock(0)),
            DeclineDecision::StopHardDecline { .. }
        ));
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
    fn policy_serializes_schedule_as_seconds() {
        let policy = delays(&[60]);
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "schedule": {"delays": [60]},
                "retry_hour": null,
                "declines": {},
                "passive": false,
                "final_action": "leave_open",
            })
        );
        let back: RecoveryPolicy = serde_json::from_value(json).unwrap();
        assert_eq!(back, policy);

        let spread = serde_json::to_value(RecoveryPolicy::default()).unwrap();
        assert_eq!(
            spread["schedule"],
            serde_json::json!({"spread": {"tries": 8, "window": 1_209_600}})
        );
    }

    #[test]
    fn first_shape_policy_still_loads() {
        let stored =
            serde_json::json!({"retry_delays": [60, 120], "final_action": "mark_uncollectible"});
        let policy: RecoveryPolicy = serde_json::from_value(stored).unwrap();
        assert_eq!(
            policy.schedule,
            Schedule::Delays(vec![Duration::from_secs(60), Duration::from_secs(120)])
        );
        assert_eq!(policy.final_action, FinalAction::MarkUncollectible);
        assert_eq!(policy.retry_hour, None);
        assert!(!policy.passive);
    }

    #[test]
    fn invalid_policy_json_is_rejected() {
        let hour = serde_json::json!({"retry_hour": 24});
        let error = serde_json::from_value::<RecoveryPolicy>(hour).unwrap_err();
        assert!(
            error.to_string().contains("invalid retry_hour 24"),
            "{error}"
        );

        let forbidden = serde_json::json!({"declines": {"retry": ["stolen_card"]}});
        let error = serde_json::from_value::<RecoveryPolicy>(forbidden).unwrap_err();
        assert!(error.to_string().contains("\"stolen_card\""), "{error}");
    }

    #[test]
    fn time_zone_names_parse() {
        assert_eq!(parse_time_zone("Asia/Tokyo"), Ok(chrono_tz::Asia::Tokyo));
        assert_eq!(
            parse_time_zone("Mars/Olympus").unwrap_err().to_string(),
            "unknown time zone \"Mars/Olympus\": use an IANA name such as Europe/Paris or UTC"
        );
    }

    #[test]
    fn window_end_covers_schedule_and_grace() {
        let mut policy = delays(&[3600, 3600]);
        let day = 24 * 3600;
        assert_eq!(policy.window_end(at(0)), at(7200 + day));
        policy.retry_hour = Some(9);
        assert_eq!(policy.window_end(at(0)), at(7200 + 3 * day));
    }

    const ZONES: &[Tz] = &[
        chrono_tz::UTC,
        chrono_tz::America::New_York,
        chrono_tz::Asia::Tokyo,
        chrono_tz::Europe::London,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Pacific::Chatham,
        chrono_tz::America::Sao_Paulo,
    ];

    fn schedule_strategy() -> impl Strategy<Value = Schedule> {
        prop_oneof![
            proptest::collection::vec(0u64..2_000_000, 0..12).prop_map(|list| Schedule::Delays(
                list.into_iter().map(Duration::from_secs).collect()
            )),
            (0u32..20, 0u64..5_000_000).prop_map(|(tries, window)| Schedule::Spread {
                tries,
                window: Duration::from_secs(window),
            }),
        ]
    }

    proptest! {
        /// Whatever the schedule, zone, hour and clock, a retry time is never
        /// in the past, exists only for attempts 1 to the configured count,
        /// and falls on the preferred local hour unless a DST gap removed it.
        #[test]
        fn retry_time_is_never_past_nor_extra(
            schedule in schedule_strategy(),
            zone in 0..ZONES.len(),
            hour in proptest::option::of(0u8..24),
            opened_at in 1_700_000_000i64..1_900_000_000,
            elapsed in 0i64..5_000_000,
            attempt in 0u32..25,
        ) {
            let time_zone = ZONES[zone];
            let policy = RecoveryPolicy { schedule, retry_hour: hour, ..RecoveryPolicy::default() };
            let clock = RetryClock { opened_at: at(opened_at), now: at(opened_at + elapsed), time_zone };
            let run_at = policy.retry_time(attempt, &clock);

            if attempt == 0 || attempt > policy.max_retries() {
                prop_assert_eq!(run_at, None);
                return Ok(());
            }
            let run_at = run_at.expect("a configured attempt has a time");
            prop_assert!(run_at >= clock.now);
            if let Some(hour) = hour {
                use chrono::Timelike;
                let local = run_at.with_timezone(&time_zone);
                let exists = local
                    .date_naive()
                    .and_hms_opt(u32::from(hour), 0, 0)
                    .is_some_and(|naive| !matches!(time_zone.from_local_datetime(&naive), chrono::LocalResult::None));
                if exists {
                    prop_assert_eq!(local.hour(), u32::from(hour));
                    prop_assert_eq!(local.minute(), 0);
                }
                let earliest = policy.schedule.nominal_time(attempt, &clock).unwrap().max(clock.now);
                prop_assert!(run_at - earliest < chrono::Duration::hours(26));
            }
        }

        /// Running a recovery to its end makes exactly the configured number
        /// of retries, each at or after the one before.
        #[test]
        fn schedule_makes_configured_retries(
            schedule in schedule_strategy(),
            zone in 0..ZONES.len(),
            hour in proptest::option::of(0u8..24),
        ) {
            let policy = RecoveryPolicy { schedule, retry_hour: hour, ..RecoveryPolicy::default() };
            let opened_at = at(1_780_000_000);
            let mut clock = RetryClock { opened_at, now: opened_at, time_zone: ZONES[zone] };
            let mut made = 0u32;
            while let Some(run_at) = policy.retry_time(made + 1, &clock) {
                prop_assert!(run_at >= clock.now);
                clock.now = run_at;
                made += 1;
                prop_assert!(made <= policy.max_retries());
            }
            prop_assert_eq!(made, policy.max_retries());
        }
    }
}
