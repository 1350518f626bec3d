//! Card network caps: how often one card may be charged again.
//!
//! Visa allows at most 15 reattempts of a declined card in 30 days, and
//! Mastercard's excessive-retry rules count attempts per card over the same
//! span. The networks count per card, not per merchant, so Citadel counts the
//! attempts of every merchant on one card, keyed by Stripe's payment method
//! fingerprint. [`CardCap::check`] decides whether one more attempt fits.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The default number of attempts per card within [`DEFAULT_CAP_WINDOW`]: 15,
/// Visa's reattempt limit.
pub const DEFAULT_CAP_ATTEMPTS: u32 = 15;

/// The default span the cap counts over: 30 days.
pub const DEFAULT_CAP_WINDOW: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The maximum number of payment attempts on one card within a sliding
/// window, across all merchants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardCap {
    max_attempts: u32,
    window: Duration,
}

/// An error returned for a cap that would allow no attempt at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidCardCap {
    /// The cap allows zero attempts.
    #[error("invalid card cap of 0 attempts: allow at least 1, such as the default 15")]
    ZeroAttempts,
    /// The window is zero or longer than chrono can add to a date.
    #[error(
        "invalid card cap window of {seconds} s: use a positive span of at most 100 years, \
         such as the default 30 days"
    )]
    Window {
        /// The window given, in seconds.
        seconds: u64,
    },
}

/// Whether one more attempt on a card fits its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapCheck {
    /// The attempt may be made now.
    Allowed,
    /// The card has used its cap: the earliest time the next attempt fits.
    Postpone {
        /// When the oldest counted attempt leaves the window.
        until: DateTime<Utc>,
    },
}

impl Default for CardCap {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_CAP_ATTEMPTS,
            window: DEFAULT_CAP_WINDOW,
        }
    }
}

impl CardCap {
    /// Creates a cap of `max_attempts` attempts per card within `window`.
    ///
    /// # Errors
    ///
    /// [`InvalidCardCap`] when `max_attempts` is zero, or `window` is zero or
    /// longer than 100 years.
    pub fn new(max_attempts: u32, window: Duration) -> Result<Self, InvalidCardCap> {
        const HUNDRED_YEARS: Duration = Duration::from_secs(100 * 366 * 24 * 60 * 60);
        if max_attempts == 0 {
            return Err(InvalidCardCap::ZeroAttempts);
        }
        if window.is_zero() || window > HUNDRED_YEARS {
            return Err(InvalidCardCap::Window {
                seconds: window.as_secs(),
            });
        }
        Ok(Self {
            max_attempts,
            window,
        })
    }

    /// Returns the maximum number of attempts per card within the window.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Returns the window the cap counts over.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Returns the start of the window that ends at `now`: attempts after it
    /// count.
    pub fn window_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        // `new` bounds the window to 100 years, which chrono always accepts.
        let window = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX);
        now.checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Decides whether one more attempt fits at `now`, given the times of
    /// the card's earlier attempts. Attempts at or before
    /// [`CardCap::window_start`] do not count.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use chrono::{TimeZone, Utc};
    /// use citadel_core::policy::{CapCheck, CardCap};
    ///
    /// let cap = CardCap::new(2, Duration::from_secs(100)).unwrap();
    /// let at = |s| Utc.timestamp_opt(s, 0).unwrap();
    /// assert_eq!(cap.check(&[at(10)], at(50)), CapCheck::Allowed);
    /// assert_eq!(cap.check(&[at(10), at(40)], at(50)), CapCheck::Postpone { until: at(110) });
    /// ```
    pub fn check(&self, attempts: &[DateTime<Utc>], now: DateTime<Utc>) -> CapCheck {
        let start = self.window_start(now);
        let mut counted: Vec<DateTime<Utc>> = attempts
            .iter()
            .copied()
            .filter(|attempt| *attempt > start)
            .collect();
        let max = usize::try_from(self.max_attempts).unwrap_or(usize::MAX);
        if counted.len() < max {
            return CapCheck::Allowed;
        }

        // Once the oldest `len - max + 1` counted attempts have left the
        // window, `max - 1` remain and one more fits.
        counted.sort_unstable();
        let leaving = counted[counted.len() - max];
        let window = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX);
        let until = leaving
            .checked_add_signed(window)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        CapCheck::Postpone { until }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).unwrap()
    }

    #[test]
    fn new_rejects_zero_cap() {
        assert_eq!(
            CardCap::new(0, DEFAULT_CAP_WINDOW),
            Err(InvalidCardCap::ZeroAttempts)
        );
        assert_eq!(
            CardCap::new(3, Duration::ZERO),
            Err(InvalidCardCap::Window { seconds: 0 })
        );
        assert!(CardCap::new(1, Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn default_is_fifteen_in_thirty_days() {
        let cap = CardCap::default();
        assert_eq!(cap.max_attempts(), 15);
        assert_eq!(cap.window(), Duration::from_secs(2_592_000));
    }

    #[test]
    fn attempts_at_window_start_do_not_count() {
        let cap = CardCap::new(1, Duration::from_secs(100)).unwrap();
        assert_eq!(cap.check(&[at(0)], at(100)), CapCheck::Allowed);
        assert_eq!(
            cap.check(&[at(1)], at(100)),
            CapCheck::Postpone { until: at(101) }
        );
    }

    #[test]
    fn postpone_waits_for_enough_to_leave() {
        let cap = CardCap::new(2, Duration::from_secs(100)).unwrap();
        let attempts = [at(30), at(10), at(20), at(40)];
        // Four counted, two allowed: three must leave, so wait for at(30).
        assert_eq!(
            cap.check(&attempts, at(50)),
            CapCheck::Postpone { until: at(130) }
        );
        assert_eq!(cap.check(&attempts, at(130)), CapCheck::Allowed);
    }

    proptest! {
        /// Whatever the order and timing of requests from any number of
        /// merchants, attempts made through the check never exceed the cap
        /// in any window.
        #[test]
        fn cap_is_never_passed(
            max in 1u32..6,
            window in 10u64..1000,
            mut requests in proptest::collection::vec(0i64..5000, 0..60),
        ) {
            let cap = CardCap::new(max, Duration::from_secs(window)).unwrap();
            requests.sort_unstable();
            let mut made: Vec<DateTime<Utc>> = Vec::new();
            let mut clock = at(0);
            for request in requests {
                let mut now = at(request).max(clock);
                while let CapCheck::Postpone { until } = cap.check(&made, now) {
                    prop_assert!(until > now);
                    now = until;
                }
                made.push(now);
                clock = now;
            }
            let window = chrono::Duration::seconds(i64::try_from(window).unwrap());
            for end in &made {
                let in_window = made
                    .iter()
                    .filter(|time| **time > *end - window && **time <= *end)
                    .count();
                prop_assert!(in_window <= usize::try_from(max).unwrap());
            }
        }
    }
}
