//! Retry schedules: when each retry of a recovery runs.
//!
//! A [`Schedule`] gives each retry a nominal time: a list of delays counted
//! from the failure before it, or a number of tries spread evenly over a
//! window that starts when the recovery opened. [`RecoveryPolicy::retry_time`]
//! then moves that time to now when it has passed, and forward to the
//! merchant's preferred local hour when the policy names one.
//!
//! [`RecoveryPolicy::retry_time`]: super::RecoveryPolicy::retry_time

use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The default number of retries: 8, the most that Stripe's Smart Retries
/// make.
pub const DEFAULT_TRIES: u32 = 8;

/// The default window for them: 2 weeks.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// When the retries of a recovery run, before the preferred hour is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// One delay per retry, in seconds in JSON, each counted from the failure
    /// that scheduled the retry: the first from the original failure, the
    /// second from the first retry's decline, and so on.
    Delays(#[serde(with = "super::seconds_list")] Vec<Duration>),
    /// `tries` retries spread evenly over `window` (seconds in JSON) from the
    /// moment the recovery opened, the last one at the window's end.
    Spread {
        /// The number of retries.
        tries: u32,
        /// The time from the recovery's opening to its last retry.
        #[serde(with = "super::seconds")]
        window: Duration,
    },
}

impl Default for Schedule {
    /// 8 tries within 2 weeks: as many tries as Stripe's Smart Retries make.
    fn default() -> Self {
        Schedule::Spread {
            tries: DEFAULT_TRIES,
            window: DEFAULT_WINDOW,
        }
    }
}

/// The moments a retry time is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryClock {
    /// When the recovery opened.
    pub opened_at: DateTime<Utc>,
    /// The current time, which is also the time of the failure that asks for
    /// the next retry.
    pub now: DateTime<Utc>,
    /// The merchant's time zone.
    pub time_zone: Tz,
}

impl Schedule {
    /// Returns how many retries the schedule makes.
    pub fn max_retries(&self) -> u32 {
        match self {
            Schedule::Delays(delays) => u32::try_from(delays.len()).unwrap_or(u32::MAX),
            Schedule::Spread { tries, .. } => *tries,
        }
    }

    /// Returns the time from the recovery's opening to its last retry when
    /// each retry runs at its nominal time: the sum of the delays, or the
    /// window.
    pub fn span(&self) -> Duration {
        match self {
            Schedule::Delays(delays) => delays.iter().sum(),
            Schedule::Spread { window, .. } => *window,
        }
    }

    /// Returns the nominal time of retry `attempt` (from 1), or `None` when
    /// the schedule has no such retry or the time does not fit in a
    /// `DateTime`.
    pub fn nominal_time(&self, attempt: u32, clock: &RetryClock) -> Option<DateTime<Utc>> {
        if attempt == 0 || attempt > self.max_retries() {
            return None;
        }
        match self {
            Schedule::Delays(delays) => {
                let index = usize::try_from(attempt - 1).ok()?;
                let delay = chrono::Duration::from_std(*delays.get(index)?).ok()?;
                clock.now.checked_add_signed(delay)
            }
            Schedule::Spread { tries, window } => {
                let seconds =
                    u128::from(window.as_secs()) * u128::from(attempt) / u128::from(*tries);
                let offset = chrono::Duration::seconds(i64::try_from(seconds).ok()?);
                clock.opened_at.checked_add_signed(offset)
            }
        }
    }
}

/// Returns the first instant at or after `instant` whose local time in
/// `time_zone` is `hour`:00.
///
/// A daylight-saving change can remove that local time (New York has no
/// 02:00 on the day clocks spring forward), and the result is then the end
/// of the gap (03:00 there). A local time that occurs twice, when clocks fall
/// back, resolves to its first occurrence. `hour` must be below 24; a larger
/// one returns `instant` unchanged.
///
/// # Examples
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use citadel_core::policy::at_local_hour;
///
/// // 2026-03-07 20:00 UTC is 05:00 on March 8 in Tokyo (UTC+9), so the next
/// // 09:00 there is four hours later.
/// let after = Utc.with_ymd_and_hms(2026, 3, 7, 20, 0, 0).unwrap();
/// let run_at = at_local_hour(after, 9, chrono_tz::Asia::Tokyo);
/// assert_eq!(run_at, Utc.with_ymd_and_hms(2026, 3, 8, 0, 0, 0).unwrap());
/// ```
pub fn at_local_hour(instant: DateTime<Utc>, hour: u8, time_zone: Tz) -> DateTime<Utc> {
    let mut date = instant.with_timezone(&time_zone).date_naive();
    // Day one's hour may lie before `instant`, and day two's is after it
    // unless a gap moved it; day three covers that case.
    for _ in 0..3 {
        let Some(local) = date.and_hms_opt(u32::from(hour), 0, 0) else {
            return instant;
        };
        if let Some(candidate) = resolve_local(local, time_zone)
            && candidate >= instant
        {
            return candidate;
        }
        let Some(next) = date.succ_opt() else {
            return instant;
        };
        date = next;
    }
    instant
}

/// Converts a local time to UTC: the first of two occurrences, or the end of
/// the gap that skips it. `None` only for a gap longer than four hours,
/// which no IANA zone has had for a daily clock change.
fn resolve_local(local: NaiveDateTime, time_zone: Tz) -> Option<DateTime<Utc>> {
    const STEP_MINUTES: i64 = 15;
    const MAX_GAP_STEPS: i64 = 16;

    for step in 0..=MAX_GAP_STEPS {
        let shifted = local + chrono::Duration::minutes(step * STEP_MINUTES);
        match time_zone.from_local_datetime(&shifted) {
            LocalResult::Single(time) => return Some(time.with_timezone(&Utc)),
            LocalResult::Ambiguous(earliest, _) => return Some(earliest.with_timezone(&Utc)),
            LocalResult::None => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use chrono::Timelike;
    use chrono_tz::{America, Asia, Australia, Europe, UTC};

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn local_hour_in_tokyo() {
        // Tokyo has no daylight saving time: 09:00 is always 00:00 UTC.
        let run_at = at_local_hour(utc(2026, 3, 8, 1, 0), 9, Asia::Tokyo);
        assert_eq!(run_at, utc(2026, 3, 9, 0, 0));
    }

    #[test]
    fn local_hour_across_new_york_dst() {
        // 2026-03-08: New York moves from UTC-5 to UTC-4 at 02:00 local.
        let before = at_local_hour(utc(2026, 3, 7, 12, 0), 9, America::New_York);
        assert_eq!(before, utc(2026, 3, 7, 14, 0));
        let after = at_local_hour(utc(2026, 3, 7, 15, 0), 9, America::New_York);
        assert_eq!(after, utc(2026, 3, 8, 13, 0));
        // 2026-11-01: back to UTC-5.
        let autumn = at_local_hour(utc(2026, 10, 31, 14, 0), 9, America::New_York);
        assert_eq!(autumn, utc(2026, 11, 1, 14, 0));
    }

    #[test]
    fn skipped_hour_moves_to_gap_end() {
        // 02:00 does not exist in New York on 2026-03-08; 03:00 EDT is 07:00 UTC.
        let run_at = at_local_hour(utc(2026, 3, 8, 5, 0), 2, America::New_York);
        assert_eq!(run_at, utc(2026, 3, 8, 7, 0));
    }

    #[test]
    fn repeated_hour_takes_first_occurrence() {
        // 01:00 happens twice in New York on 2026-11-01: 05:00 and 06:00 UTC.
        let run_at = at_local_hour(utc(2026, 11, 1, 4, 30), 1, America::New_York);
        assert_eq!(run_at, utc(2026, 11, 1, 5, 0));
    }

    #[test]
    fn exact_hour_is_kept() {
        let instant = utc(2026, 6, 1, 0, 0);
        assert_eq!(at_local_hour(instant, 9, Asia::Tokyo), instant);
    }

    #[test]
    fn spread_places_last_try_at_window_end() {
        let opened_at = utc(2026, 1, 1, 0, 0);
        let clock = RetryClock {
            opened_at,
            now: opened_at,
            time_zone: UTC,
        };
        let schedule = Schedule::default();
        assert_eq!(schedule.nominal_time(0, &clock), None);
        assert_eq!(
            schedule.nominal_time(1, &clock),
            Some(opened_at + chrono::Duration::hours(42))
        );
        assert_eq!(
            schedule.nominal_time(8, &clock),
            Some(opened_at + chrono::Duration::days(14))
        );
        assert_eq!(schedule.nominal_time(9, &clock), None);
    }

    #[test]
    fn delays_count_from_now() {
        let clock = RetryClock {
            opened_at: utc(2026, 1, 1, 0, 0),
            now: utc(2026, 1, 5, 0, 0),
            time_zone: Europe::London,
        };
        let schedule = Schedule::Delays(vec![Duration::from_secs(60), Duration::from_secs(3600)]);
        assert_eq!(
            schedule.nominal_time(1, &clock),
            Some(utc(2026, 1, 5, 0, 1))
        );
        assert_eq!(
            schedule.nominal_time(2, &clock),
            Some(utc(2026, 1, 5, 1, 0))
        );
        assert_eq!(schedule.nominal_time(3, &clock), None);
        assert_eq!(schedule.span(), Duration::from_secs(3660));
    }

    #[test]
    fn lord_howe_half_hour_shift() {
        // Lord Howe Island moves its clocks by 30 minutes; on 2026-10-04 local
        // 02:00 jumps to 02:30 (UTC+10:30 to UTC+11).
        let run_at = at_local_hour(utc(2026, 10, 3, 14, 0), 2, Australia::Lord_Howe);
        assert_eq!(run_at.with_timezone(&Australia::Lord_Howe).hour(), 2);
        assert_eq!(run_at.with_timezone(&Australia::Lord_Howe).minute(), 30);
    }
}
