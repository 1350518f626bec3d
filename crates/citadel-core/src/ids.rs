//! Typed identifiers.
//!
//! Citadel's own rows (merchants, tasks) use database-assigned integers, and
//! Stripe's objects use Stripe's prefixed string ids (`acct_…`, `in_…`,
//! `evt_…`). Each gets a newtype so an invoice id can never be passed where an
//! account id is expected. Stripe ids are checked for their prefix when parsed,
//! because a wrong prefix almost always means the value came from the wrong
//! field.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An error returned when a string is not a valid identifier of the expected
/// kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The value does not start with the prefix Stripe uses for this object.
    #[error("invalid {kind} {value:?}: expected an id starting with {prefix:?}")]
    WrongPrefix {
        /// The kind of id that was expected, such as "account id".
        kind: &'static str,
        /// The prefix Stripe uses for this kind, such as `acct_`.
        prefix: &'static str,
        /// The rejected value.
        value: String,
    },
    /// The value contains characters Stripe never uses in ids, or is too long.
    #[error(
        "invalid {kind} {value:?}: ids contain only ASCII letters, digits and '_', at most 255 characters"
    )]
    InvalidCharacters {
        /// The kind of id that was expected.
        kind: &'static str,
        /// The rejected value.
        value: String,
    },
    /// The value is not a positive integer.
    #[error("invalid {kind} {value:?}: expected a positive integer")]
    NotANumber {
        /// The kind of id that was expected, such as "task id".
        kind: &'static str,
        /// The rejected value.
        value: String,
    },
}

macro_rules! integer_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(i64);

        impl $name {
            /// Wraps a database-assigned id.
            pub const fn new(value: i64) -> Self {
                Self(value)
            }

            /// Returns the integer value.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                match value.parse::<i64>() {
                    Ok(id) if id > 0 => Ok(Self(id)),
                    _ => Err(IdError::NotANumber { kind: $kind, value: value.to_owned() }),
                }
            }
        }
    };
}

integer_id!(
    /// A merchant (one tenant) in Citadel's `merchants` table.
    MerchantId,
    "merchant id"
);
integer_id!(
    /// A task in Citadel's `scheduled_tasks` table.
    TaskId,
    "task id"
);
integer_id!(
    /// An entry of the activity ledger.
    ActivityId,
    "activity id"
);

fn is_stripe_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

macro_rules! stripe_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix Stripe gives ids of this kind.
            pub const PREFIX: &'static str = $prefix;

            /// Parses and checks an id.
            ///
            /// # Errors
            ///
            /// Returns [`IdError`] when the value lacks the prefix or contains
            /// characters Stripe never uses in ids.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                if !value.starts_with($prefix) || value.len() == $prefix.len() {
                    return Err(IdError::WrongPrefix { kind: $kind, prefix: $prefix, value });
                }
                if value.len() > 255 || !value.chars().all(is_stripe_id_char) {
                    return Err(IdError::InvalidCharacters { kind: $kind, value });
                }
                Ok(Self(value))
            }

            /// Returns the id as Stripe writes it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::parse(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

stripe_id!(
    /// A Stripe account id (`acct_…`): a merchant's connected account.
    AccountId,
    "account id",
    "acct_"
);
stripe_id!(
    /// A Stripe invoice id (`in_…`).
    InvoiceId,
    "invoice id",
    "in_"
);
stripe_id!(
    /// A Stripe event id (`evt_…`).
    EventId,
    "event id",
    "evt_"
);
stripe_id!(
    /// A Stripe customer id (`cus_…`).
    CustomerId,
    "customer id",
    "cus_"
);
stripe_id!(
    /// A Stripe subscription id (`sub_…`).
    SubscriptionId,
    "subscription id",
    "sub_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_id_accepts_its_prefix() {
        let id = AccountId::parse("acct_1Pgc6tB7WZ01zgkW").unwrap();
        assert_eq!(id.as_str(), "acct_1Pgc6tB7WZ01zgkW");
    }

    #[test]
    fn stripe_id_rejects_other_prefix() {
        let err = AccountId::parse("in_123").unwrap_err();
        assert!(matches!(
            err,
            IdError::WrongPrefix {
                prefix: "acct_",
                ..
            }
        ));
        assert!(err.to_string().contains("in_123"), "{err}");
    }

    #[test]
    fn stripe_id_rejects_bare_prefix() {
        assert!(InvoiceId::parse("in_").is_err());
    }

    #[test]
    fn stripe_id_rejects_odd_characters() {
        let err = InvoiceId::parse("in_12 3").unwrap_err();
        assert!(matches!(err, IdError::InvalidCharacters { .. }));
    }

    #[test]
    fn integer_id_rejects_text_and_zero() {
        for bad in ["abc", "0", "-4", "", "1.5"] {
            let err = bad.parse::<TaskId>().unwrap_err();
            assert!(
                matches!(
                    err,
                    IdError::NotANumber {
                        kind: "task id",
                        ..
                    }
                ),
                "{bad}"
            );
        }
        assert_eq!("42".parse::<TaskId>().unwrap().get(), 42);
    }

    #[test]
    fn stripe_id_round_trips_through_serde() {
        let id = EventId::parse("evt_1").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"evt_1\"");
        assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<EventId>("\"in_1\"").is_err());
    }
}
