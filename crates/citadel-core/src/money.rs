//! Money as an integer count of minor units with its currency.
//!
//! Stripe sends amounts as integers in the currency's smallest unit (cents for
//! `usd`, yen for `jpy`), and so does Citadel: no amount is ever a float.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An error returned for a currency code that is not three ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid currency {0:?}: expected a three-letter ISO 4217 code such as \"usd\"")]
pub struct CurrencyError(pub String);

/// A lowercase ISO 4217 currency code, as Stripe writes it (`usd`, `eur`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a three-letter code in either case.
    ///
    /// # Errors
    ///
    /// Returns [`CurrencyError`] unless the value is exactly three ASCII
    /// letters.
    pub fn parse(code: &str) -> Result<Self, CurrencyError> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(CurrencyError(code.to_owned()));
        }
        Ok(Self([
            bytes[0].to_ascii_lowercase(),
            bytes[1].to_ascii_lowercase(),
            bytes[2].to_ascii_lowercase(),
        ]))
    }

    /// Returns the lowercase code.
    pub fn as_str(&self) -> &str {
        // The bytes are ASCII letters, checked in `parse`.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Currency {
    type Err = CurrencyError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::parse(code)
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.as_str().to_owned()
    }
}

/// An amount in minor units of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// The amount in the currency's smallest unit, as Stripe sends it.
    pub minor_units: i64,
    /// The currency of the amount.
    pub currency: Currency,
}

impl Money {
    /// Creates an amount from minor units.
    pub const fn new(minor_units: i64, currency: Currency) -> Self {
        Self {
            minor_units,
            currency,
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor_units, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_is_lowercased() {
        assert_eq!(Currency::parse("USD").unwrap().as_str(), "usd");
    }

    #[test]
    fn currency_parses_from_str() {
        let currency: Currency = "EUR".parse().unwrap();
        assert_eq!(currency.as_str(), "eur");
    }

    #[test]
    fn currency_rejects_bad_codes() {
        for bad in ["", "us", "usdd", "u$d", "12a"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn money_serializes_minor_units() {
        let money = Money::new(1999, Currency::parse("eur").unwrap());
        let json = serde_json::to_value(money).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"minor_units": 1999, "currency": "eur"})
        );
    }
}
