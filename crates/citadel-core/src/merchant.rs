//! Merchants: the tenants whose failed payments Citadel recovers.
//!
//! Each merchant is one Stripe connected account (or, at most once, the
//! platform's own account) with its own recovery policy and time zone.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, MerchantId};
use crate::policy::{InvalidPolicy, RecoveryPolicy, UnknownTimeZone, parse_time_zone};

/// Whether a merchant's tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantStatus {
    /// Events are applied and tasks run.
    Active,
    /// Events are applied, but the merchant's tasks are not claimed.
    Paused,
}

impl MerchantStatus {
    /// Returns the name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            MerchantStatus::Active => "active",
            MerchantStatus::Paused => "paused",
        }
    }
}

impl fmt::Display for MerchantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error returned for a merchant status name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid merchant status {0:?}: expected active or paused")]
pub struct UnknownMerchantStatus(pub String);

impl FromStr for MerchantStatus {
    type Err = UnknownMerchantStatus;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "active" => Ok(MerchantStatus::Active),
            "paused" => Ok(MerchantStatus::Paused),
            other => Err(UnknownMerchantStatus(other.to_owned())),
        }
    }
}

/// A merchant as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merchant {
    /// The merchant's id.
    pub id: MerchantId,
    /// A display name.
    pub name: String,
    /// The connected account, or `None` for the platform's own account.
    pub account_id: Option<AccountId>,
    /// Whether the merchant's tasks run.
    pub status: MerchantStatus,
    /// The policy for retrying the merchant's failed payments.
    pub policy: RecoveryPolicy,
    /// An IANA time zone name such as `Europe/Paris`.
    pub time_zone: String,
    /// When the merchant was registered.
    pub created_at: DateTime<Utc>,
}

impl Merchant {
    /// Returns the merchant's time zone, or UTC when the stored name is not
    /// an IANA zone (registration checks it, so only a row edited by hand
    /// has one).
    pub fn parsed_time_zone(&self) -> Tz {
        parse_time_zone(&self.time_zone).unwrap_or_else(|error| {
            tracing::warn!(merchant.id = self.id.get(), "{error}; using UTC");
            Tz::UTC
        })
    }
}

/// A merchant to register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMerchant {
    /// A display name.
    pub name: String,
    /// The connected account, or `None` for the platform's own account.
    pub account_id: Option<AccountId>,
    /// The policy for retrying the merchant's failed payments.
    pub policy: RecoveryPolicy,
    /// An IANA time zone name; `UTC` when unsure.
    pub time_zone: String,
}

impl NewMerchant {
    /// Creates a merchant description with the default policy in UTC.
    pub fn new(name: impl Into<String>, account_id: Option<AccountId>) -> Self {
        Self {
            name: name.into(),
            account_id,
            policy: RecoveryPolicy::default(),
            time_zone: "UTC".to_owned(),
        }
    }
}

/// An error returned for a merchant that cannot be registered as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMerchant {
    /// The time zone is not an IANA name.
    #[error(transparent)]
    TimeZone(#[from] UnknownTimeZone),
    /// The policy has an invalid value.
    #[error(transparent)]
    Policy(#[from] InvalidPolicy),
}

impl NewMerchant {
    /// Checks the time zone name and the policy.
    ///
    /// # Errors
    ///
    /// [`InvalidMerchant`] naming the value to fix.
    pub fn validate(&self) -> Result<(), InvalidMerchant> {
        parse_time_zone(&self.time_zone)?;
        self.policy.validate()?;
        Ok(())
    }
}
