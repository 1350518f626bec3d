//! A wrapper that keeps secrets out of `Debug` output and logs.

use std::fmt;

/// A secret string such as a Stripe API key or a webhook signing secret.
///
/// `Debug` prints `Secret("***")`, so a secret inside a configuration struct
/// never reaches a log line. Call [`Secret::expose`] only where the value is
/// sent or used as a key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"***\")")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let secret = Secret::new("sk_test_123");
        assert_eq!(format!("{secret:?}"), "Secret(\"***\")");
        assert_eq!(secret.expose(), "sk_test_123");
    }
}
