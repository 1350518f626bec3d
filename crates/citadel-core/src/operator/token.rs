//! API tokens of merchants: generated once, shown once, stored as a hash.
//!
//! A token is 32 bytes from the operating system's random source, written as
//! `citadel_mt_` and 64 hex digits. The store keeps only its SHA-256 digest.
//! An unsalted fast hash is enough here because the token has 256 bits of
//! entropy, so it cannot be guessed or found from the digest by search.
//! A password, with far less entropy, would need a slow salted hash instead.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// The prefix of every merchant token, so a leaked one is easy to recognise.
pub const MERCHANT_TOKEN_PREFIX: &str = "citadel_mt_";

/// The SHA-256 digest of an API token, as stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes a token as presented by a client.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Wraps a stored digest.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Returns the digest's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    // The digest reveals nothing of the token, but printing only a prefix
    // keeps logs short.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", hex::encode(&self.0[..4]))
    }
}

/// An error returned when the operating system's random source fails.
#[derive(Debug, thiserror::Error)]
#[error("failed to read the operating system's random source: {0}")]
pub struct RandomSourceError(String);

/// Generates a new merchant token and its hash.
///
/// # Errors
///
/// [`RandomSourceError`] when the operating system cannot supply random
/// bytes.
///
/// # Examples
///
/// ```
/// use citadel_core::operator::token::{TokenHash, generate_merchant_token};
///
/// let (token, hash) = generate_merchant_token().unwrap();
/// assert!(token.expose().starts_with("citadel_mt_"));
/// assert_eq!(TokenHash::of(token.expose()), hash);
/// ```
pub fn generate_merchant_token() -> Result<(Secret, TokenHash), RandomSourceError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| RandomSourceError(err.to_string()))?;
    let token = format!("{MERCHANT_TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = TokenHash::of(&token);
    Ok((Secret::new(token), hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_differ() {
        let (first, _) = generate_merchant_token().unwrap();
        let (second, _) = generate_merchant_token().unwrap();
        assert_ne!(first.expose(), second.expose());
        assert_eq!(first.expose().len(), MERCHANT_TOKEN_PREFIX.len() + 64);
    }

    #[test]
    fn hash_debug_hides_most_of_digest() {
        let hash = TokenHash::of("citadel_mt_example");
        let text = format!("{hash:?}");
        assert!(text.len() < 24, "{text}");
    }
}
