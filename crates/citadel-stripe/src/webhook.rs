//! Webhook signature checking.
//!
//! Stripe signs every webhook request with the endpoint's signing secret
//! (`whsec_…`) and sends the result in the `Stripe-Signature` header:
//!
//! ```text
//! Stripe-Signature: t=1492774577,v1=5257a869…,v0=6ffbb59b…
//! ```
//!
//! `t` is the Unix time of signing, and each `v1` is the hex HMAC-SHA256 of
//! `"{t}.{body}"` under one of the endpoint's secrets: during a secret
//! rotation Stripe sends one `v1` per active secret. Other schemes (`v0`) are
//! ignored. A [`WebhookVerifier`] accepts the request when any `v1` matches any
//! of its secrets and `t` is within its tolerance of the current time, which
//! bounds how long a captured request can be replayed.
//!
//! The signature covers the raw bytes of the body, so verify before parsing:
//! JSON that was parsed and serialized again differs from what Stripe signed
//! and is rejected.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use citadel_core::Secret;
//! use citadel_stripe::webhook::{WebhookVerifier, sign};
//!
//! let old = Secret::new("whsec_old");
//! let new = Secret::new("whsec_new");
//! let verifier = WebhookVerifier::builder()
//!     .secret(old)
//!     .secret(new.clone())
//!     .tolerance(Duration::from_secs(60))
//!     .build()?;
//!
//! let body = br#"{"id": "evt_1"}"#;
//! let header = sign(body, &new, chrono::Utc::now().timestamp());
//! verifier.verify(body, &header)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use citadel_core::Secret;
use citadel_core::event::Event;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::event::{ParseError, parse_event};

type HmacSha256 = Hmac<Sha256>;

/// The default tolerance of a [`WebhookVerifier`]: 300 seconds, the default
/// of Stripe's own libraries.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The maximum number of characters of a malformed header that an error
/// repeats.
const HEADER_EXCERPT_CHARS: usize = 80;

/// An error returned when a webhook request fails verification.
///
/// Respond to such a request with HTTP 400. Stripe then retries it, and a
/// request that Stripe did not send is dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The request has no `Stripe-Signature` header, or an empty one.
    #[error(
        "missing Stripe-Signature header: Stripe signs every webhook request, so check that \
         the request comes from Stripe and that no proxy drops the header"
    )]
    MissingHeader,
    /// The header is not a list of `key=value` pairs with one integer `t`.
    #[error(
        "malformed Stripe-Signature header {header:?}: expected \
         \"t=<unix seconds>,v1=<hex signature>\""
    )]
    MalformedHeader {
        /// The start of the header as received.
        header: String,
    },
    /// The header has a timestamp but no `v1` signature.
    #[error(
        "no v1 signature in the Stripe-Signature header: only v1 (HMAC-SHA256) signatures \
         are accepted, so check the endpoint's settings in the Stripe dashboard"
    )]
    NoSignature,
    /// The signature matches, but the signing time is too far from now.
    #[error(
        "webhook timestamp {timestamp} is more than {seconds} s from the current time: check \
         the server clock, because Stripe sends each request right after signing it",
        seconds = tolerance.as_secs()
    )]
    TimestampOutsideTolerance {
        /// The signing time from the header, in Unix seconds.
        timestamp: i64,
        /// The verifier's tolerance.
        tolerance: Duration,
    },
    /// No `v1` signature matches the body under any of the secrets.
    #[error(
        "webhook signature mismatch: no v1 signature matches the body under any configured \
         secret; check the endpoint's signing secret, and pass the body exactly as received"
    )]
    SignatureMismatch,
    /// The signature is valid but the body is not an event Citadel can read.
    #[error("invalid webhook event: {0}")]
    Parse(#[from] ParseError),
}

/// An error returned by [`WebhookVerifierBuilder::build`] for an unusable
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookConfigError {
    /// The builder got no secret.
    #[error(
        "no webhook signing secret configured: add the endpoint's secret (whsec_...) from the \
         Stripe dashboard"
    )]
    NoSecret,
    /// One of the secrets is the empty string.
    #[error("webhook signing secret number {position} is empty: pass the endpoint's secret")]
    EmptySecret {
        /// The secret's position among those given, counted from 1.
        position: usize,
    },
}

/// Checks `Stripe-Signature` headers against one or more signing secrets.
///
/// `Debug` shows how many secrets the verifier has, never their values.
#[derive(Clone)]
pub struct WebhookVerifier {
    secrets: Vec<Secret>,
    tolerance: Duration,
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl WebhookVerifier {
    /// Creates a verifier with the endpoint's secrets (one, or two during a
    /// rotation) and the default tolerance of 300 seconds.
    ///
    /// # Errors
    ///
    /// Returns [`WebhookConfigError::NoSecret`] without a secret and
    /// [`WebhookConfigError::EmptySecret`] for an empty one.
    pub fn new(secrets: impl IntoIterator<Item = Secret>) -> Result<Self, WebhookConfigError> {
        Self::builder().secrets(secrets).build()
    }

    /// Starts a verifier with several secrets or another tolerance.
    pub fn builder() -> WebhookVerifierBuilder {
        WebhookVerifierBuilder::default()
    }

    /// Returns how far the signing time may be from the current time.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Verifies a request against the current time.
    ///
    /// `payload` is the raw request body and `signature_header` the value of
    /// its `Stripe-Signature` header; pass `""` when the request has none.
    ///
    /// # Errors
    ///
    /// Returns a [`WebhookError`] naming the first check that failed.
    pub fn verify(&self, payload: &[u8], signature_header: &str) -> Result<(), WebhookError> {
        self.verify_at(payload, signature_header, Utc::now())
    }

    /// Verifies a request as if the current time were `now`.
    ///
    /// # Errors
    ///
    /// Returns a [`WebhookError`] naming the first check that failed. The
    /// signature is checked before the timestamp, so
    /// [`WebhookError::TimestampOutsideTolerance`] is only returned for a
    /// request that one of the secrets signed.
    pub fn verify_at(
        &self,
        payload: &[u8],
        signature_header: &str,
        now: DateTime<Utc>,
    ) -> Result<(), WebhookError> {
        let header = SignatureHeader::parse(signature_header)?;

        if !self.any_signature_matches(&header, payload) {
            return Err(WebhookError::SignatureMismatch);
        }

        let tolerance = self.tolerance;
        if now.timestamp().abs_diff(header.timestamp) > tolerance.as_secs() {
            return Err(WebhookError::TimestampOutsideTolerance {
                timestamp: header.timestamp,
                tolerance,
            });
        }
        Ok(())
    }

    /// Verifies a request, then parses its body into an [`Event`].
    ///
    /// # Errors
    ///
    /// Returns a [`WebhookError`] when verification fails, and
    /// [`WebhookError::Parse`] when the signed body is not an event.
    pub fn verify_and_parse(
        &self,
        payload: &[u8],
        signature_header: &str,
    ) -> Result<Event, WebhookError> {
        self.verify(payload, signature_header)?;
        Ok(parse_event(payload)?)
    }

    fn any_signature_matches(&self, header: &SignatureHeader<'_>, payload: &[u8]) -> bool {
        // A value that is not hex can never match, so it is skipped.
        let signatures: Vec<Vec<u8>> = header
            .signatures
            .iter()
            .filter_map(|signature| hex::decode(signature).ok())
            .collect();

        self.secrets.iter().any(|secret| {
            let mac = signed_mac(secret, header.raw_timestamp, payload);
            signatures
                .iter()
                .any(|signature| mac.clone().verify_slice(signature).is_ok())
        })
    }
}

/// Builds a [`WebhookVerifier`].
#[derive(Debug, Clone, Default)]
pub struct WebhookVerifierBuilder {
    secrets: Vec<Secret>,
    tolerance: Option<Duration>,
}

impl WebhookVerifierBuilder {
    /// Adds a signing secret. Add the old and the new secret while Stripe
    /// rotates an endpoint's secret: a request signed with either passes.
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secrets.push(secret);
        self
    }

    /// Adds several signing secrets.
    pub fn secrets(mut self, secrets: impl IntoIterator<Item = Secret>) -> Self {
        self.secrets.extend(secrets);
        self
    }

    /// Sets how far the signing time may be from the current time, in either
    /// direction. Default: [`DEFAULT_TOLERANCE`], 300 seconds.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = Some(tolerance);
        self
    }

    /// Builds the verifier.
    ///
    /// # Errors
    ///
    /// Returns [`WebhookConfigError::NoSecret`] without a secret and
    /// [`WebhookConfigError::EmptySecret`] for an empty one.
    pub fn build(self) -> Result<WebhookVerifier, WebhookConfigError> {
        if self.secrets.is_empty() {
            return Err(WebhookConfigError::NoSecret);
        }
        if let Some(index) = self.secrets.iter().position(|s| s.expose().is_empty()) {
            return Err(WebhookConfigError::EmptySecret {
                position: index + 1,
            });
        }

        Ok(WebhookVerifier {
            secrets: self.secrets,
            tolerance: self.tolerance.unwrap_or(DEFAULT_TOLERANCE),
        })
    }
}

/// Signs `payload` as Stripe does and returns a `Stripe-Signature` header
/// value, `t={timestamp},v1={hex HMAC-SHA256}`.
///
/// Tests and demos use it to send webhook requests that a
/// [`WebhookVerifier`] with the same secret accepts.
///
/// # Examples
///
/// ```
/// use citadel_core::Secret;
/// use citadel_stripe::webhook::sign;
///
/// let header = sign(b"{}", &Secret::new("whsec_test"), 1_700_000_000);
/// assert!(header.starts_with("t=1700000000,v1="));
/// ```
pub fn sign(payload: &[u8], secret: &Secret, timestamp: i64) -> String {
    let raw_timestamp = timestamp.to_string();
    let mac = signed_mac(secret, &raw_timestamp, payload);
    let signature = hex::encode(mac.finalize().into_bytes());
    format!("t={timestamp},v1={signature}")
}

/// Returns the HMAC state after `"{timestamp}.{payload}"`, ready to finalize
/// or to compare against a signature.
fn signed_mac(secret: &Secret, raw_timestamp: &str, payload: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (RFC 2104 hashes longer keys and pads
    // shorter ones): hmac 0.12's `new_from_slice` for `Hmac` always returns
    // `Ok`.
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(raw_timestamp.as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The parts of a `Stripe-Signature` header that verification uses.
#[derive(Debug)]
struct SignatureHeader<'a> {
    /// `t` as sent, because the signature covers these exact characters.
    raw_timestamp: &'a str,
    timestamp: i64,
    /// Every `v1` value, in header order.
    signatures: Vec<&'a str>,
}

impl<'a> SignatureHeader<'a> {
    fn parse(header: &'a str) -> Result<Self, WebhookError> {
        let header = header.trim();
        if header.is_empty() {
            return Err(WebhookError::MissingHeader);
        }

        let mut raw_timestamp = None;
        let mut signatures = Vec::new();
        for item in header.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(malformed(header));
            };
            match key.trim() {
                "t" if raw_timestamp.is_some() => return Err(malformed(header)),
                "t" => raw_timestamp = Some(value.trim()),
                "v1" => signatures.push(value.trim()),
                _ => {}
            }
        }

        let Some(raw_timestamp) = raw_timestamp else {
            return Err(malformed(header));
        };
        let Ok(timestamp) = raw_timestamp.parse::<i64>() else {
            return Err(malformed(header));
        };
        if signatures.is_empty() {
            return Err(WebhookError::NoSignature);
        }

        Ok(Self {
            raw_timestamp,
            timestamp,
            signatures,
        })
    }
}

fn malformed(header: &str) -> WebhookError {
    WebhookError::MalformedHeader {
        header: header.chars().take(HEADER_EXCERPT_CHARS).collect(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::fixtures;

    const SIGNED_AT: i64 = 1_700_000_000;

    fn secret() -> Secret {
        Secret::new("whsec_test_secret")
    }

    fn verifier() -> WebhookVerifier {
        WebhookVerifier::new([secret()]).unwrap()
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).unwrap()
    }

    /// Builds an `invoice.payment_failed` body, pretty-printed as Stripe sends
    /// it.
    fn body() -> Vec<u8> {
        let mut invoice = fixtures::resource("invoice").unwrap();
        invoice["status"] = "open".into();
        let event = fixtures::event("invoice.payment_failed", invoice);
        serde_json::to_vec_pretty(&event).unwrap()
    }

    #[test]
    fn valid_signature_passes() {
        let body = body();
        let header = sign(&body, &secret(), SIGNED_AT);

        verifier().verify_at(&body, &header, at(SIGNED_AT)).unwrap();
    }

    #[test]
    fn body_changed_by_one_byte_fails() {
        let mut body = body();
        let header = sign(&body, &secret(), SIGNED_AT);
        let last = body.len() - 2;
        body[last] ^= 0x01;

        let err = verifier()
            .verify_at(&body, &header, at(SIGNED_AT))
            .unwrap_err();
        assert!(matches!(err, WebhookError::SignatureMismatch), "{err}");
    }

    #[test]
    fn reserialized_json_fails() {
        let body = body();
        let header = sign(&body, &secret(), SIGNED_AT);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let compact = serde_json::to_vec(&value).unwrap();
        assert_ne!(compact, body);

        let err = verifier()
            .verify_at(&compact, &header, at(SIGNED_AT))
            .unwrap_err();
        assert!(matches!(err, WebhookError::SignatureMismatch), "{err}");
    }

    #[test]
    fn valid_v1_first_or_last_passes() {
        let body = body();
        let valid = sign(&body, &secret(), SIGNED_AT);
        let valid_v1 = valid.split_once(",v1=").unwrap().1;
        let other_v1 = hex::encode([7_u8; 32]);

        for header in [
            format!("t={SIGNED_AT},v1={valid_v1},v1={other_v1}"),
            format!("t={SIGNED_AT},v1={other_v1},v1={valid_v1}"),
            format!("t={SIGNED_AT},v0={other_v1},v1={other_v1},v1={valid_v1}"),
        ] {
            let result = verifier().verify_at(&body, &header, at(SIGNED_AT));
            assert!(result.is_ok(), "{header}: {result:?}");
        }
    }

    #[test]
    fn only_wrong_signatures_fail() {
        let body = body();
        let header = format!("t={SIGNED_AT},v1={},v1=zz", hex::encode([7_u8; 32]));

        let err = verifier()
            .verify_at(&body, &header, at(SIGNED_AT))
            .unwrap_err();
        assert!(matches!(err, WebhookError::SignatureMismatch), "{err}");
    }

    #[test]
    fn v0_signature_is_ignored() {
        let body = body();
        let valid = sign(&body, &secret(), SIGNED_AT);
        let header = valid.replace("v1=", "v0=");

        let err = verifier()
            .verify_at(&body, &header, at(SIGNED_AT))
            .unwrap_err();
        assert!(matches!(err, WebhookError::NoSignature), "{err}");
    }

    #[test]
    fn expired_timestamp_fails() {
        let body = body();
        let header = sign(&body, &secret(), SIGNED_AT);
        let late = at(SIGNED_AT + 301);

        let err = verifier().verify_at(&body, &header, late).unwrap_err();
        assert!(
            matches!(
                err,
                WebhookError::TimestampOutsideTolerance {
                    timestamp: SIGNED_AT,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("1700000000"), "{err}");
        assert!(err.to_string().contains("300 s"), "{err}");
    }

    #[test]
    fn future_timestamp_fails() {
        let body = body();
        let header = sign(&body, &secret(), SIGNED_AT);
        let early = at(SIGNED_AT - 301);

        let err = verifier().verify_at(&body, &header, early).unwrap_err();
        assert!(
            matches!(err, WebhookError::TimestampOutsideTolerance { .. }),
            "{err}"
        );
    }

    #[test]
    fn timestamp_at_tolerance_edge_passes() {
        let body = body();
        let header = sign(&body, &secret(), SIGNED_AT);

        for now in [SIGNED_AT - 300, SIGNED_AT + 300] {
            let result = verifier().verify_at(&body, &header, at(now));
            assert!(result.is_ok(), "now {now}: {result:?}");
        }
    }

    #[test]
    fn custom_tolerance_applies() {
        let body = body();
        let header = sign(&body, &secret(), SIGNED_AT);
        let verifier = WebhookVerifier::builder()
            .secret(secret())
            .tolerance(Duration::from_secs(10))
            .build()
            .unwrap();

        assert!(
            verifier
                .verify_at(&body, &header, at(SIGNED_AT + 10))
                .is_ok()
        );
        assert!(
            verifier
                .verify_at(&body, &header, at(SIGNED_AT + 11))
                .is_err()
        );
    }

    #[test]
    fn missing_header_fails() {
        for header in ["", "   "] {
            let err = verifier()
                .verify_at(&body(), header, at(SIGNED_AT))
                .unwrap_err();
            assert!(matches!(err, WebhookError::MissingHeader), "{header:?}");
        }
    }

    #[test]
    fn malformed_header_fails() {
        let cases = [
            "garbage",
            "v1=abcd",
            "t=abc,v1=abcd",
            "t=1,t=2,v1=abcd",
            "t=1.5,v1=abcd",
        ];
        for header in cases {
            let err = verifier()
                .verify_at(&body(), header, at(SIGNED_AT))
                .unwrap_err();
            assert!(
                matches!(err, WebhookError::MalformedHeader { .. }),
                "{header}: {err}"
            );
            assert!(err.to_string().contains(header), "{err}");
        }
    }

    #[test]
    fn malformed_header_error_is_shortened() {
        let header = "x".repeat(5_000);

        let err = verifier()
            .verify_at(&body(), &header, at(SIGNED_AT))
            .unwrap_err();
        let WebhookError::MalformedHeader { header: excerpt } = err else {
            panic!("expected MalformedHeader, got {err}");
        };
        assert_eq!(excerpt.len(), HEADER_EXCERPT_CHARS);
    }

    #[test]
    fn header_without_v1_fails() {
        let err = verifier()
            .verify_at(&body(), "t=1700000000", at(SIGNED_AT))
            .unwrap_err();
        assert!(matches!(err, WebhookError::NoSignature), "{err}");
    }

    #[test]
    fn rotated_secrets_both_pass() {
        let old = Secret::new("whsec_old");
        let new = Secret::new("whsec_new");
        let verifier = WebhookVerifier::builder()
            .secrets([old.clone(), new.clone()])
            .build()
            .unwrap();
        let body = body();

        for secret in [&old, &new] {
            let header = sign(&body, secret, SIGNED_AT);
            let result = verifier.verify_at(&body, &header, at(SIGNED_AT));
            assert!(result.is_ok(), "{result:?}");
        }
        let stranger = sign(&body, &Secret::new("whsec_other"), SIGNED_AT);
        assert!(verifier.verify_at(&body, &stranger, at(SIGNED_AT)).is_err());
    }

    #[test]
    fn header_during_rotation_passes_with_either_secret() {
        let old = Secret::new("whsec_old");
        let new = Secret::new("whsec_new");
        let body = body();
        let old_v1 = sign(&body, &old, SIGNED_AT);
        let new_v1 = sign(&body, &new, SIGNED_AT);
        let header = format!("{old_v1},v1={}", new_v1.split_once(",v1=").unwrap().1);

        for secret in [old, new] {
            let verifier = WebhookVerifier::new([secret]).unwrap();
            assert!(verifier.verify_at(&body, &header, at(SIGNED_AT)).is_ok());
        }
    }

    #[test]
    fn builder_rejects_missing_or_empty_secret() {
        assert_eq!(
            WebhookVerifier::builder().build().unwrap_err(),
            WebhookConfigError::NoSecret
        );
        let err = WebhookVerifier::builder()
            .secret(secret())
            .secret(Secret::new(""))
            .build()
            .unwrap_err();
        assert_eq!(err, WebhookConfigError::EmptySecret { position: 2 });
    }

    #[test]
    fn default_tolerance_is_300_seconds() {
        assert_eq!(verifier().tolerance(), Duration::from_secs(300));
    }

    #[test]
    fn debug_hides_secrets() {
        let debug = format!("{:?}", verifier());
        assert!(!debug.contains("whsec_test_secret"), "{debug}");
        assert!(debug.contains("secrets: 1"), "{debug}");
    }

    #[test]
    fn verify_and_parse_returns_event() {
        let body = body();
        let header = sign(&body, &secret(), Utc::now().timestamp());

        let event = verifier().verify_and_parse(&body, &header).unwrap();
        assert_eq!(event.event_type, "invoice.payment_failed");
    }

    #[test]
    fn verify_and_parse_reports_parse_error() {
        let body = b"not json";
        let header = sign(body, &secret(), Utc::now().timestamp());

        let err = verifier().verify_and_parse(body, &header).unwrap_err();
        assert!(matches!(err, WebhookError::Parse(_)), "{err}");
    }

    #[test]
    fn sign_matches_a_known_vector() {
        // Computed independently with Python's hmac module:
        // hmac.new(b"whsec_test_secret", b"1700000000.{}", sha256).hexdigest()
        let header = sign(b"{}", &secret(), SIGNED_AT);
        assert_eq!(
            header,
            "t=1700000000,v1=ceb8863f7208fa249a6cd8f951e993c7563412aca65866f6272283debe143ab3"
        );
    }

    proptest! {
        #[test]
        fn verify_never_panics(header in ".{0,200}", payload in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = verifier().verify_at(&payload, &header, at(SIGNED_AT));
        }

        #[test]
        fn signed_payload_always_verifies(payload in prop::collection::vec(any::<u8>(), 0..500), t in -1_000_000_000_i64..5_000_000_000) {
            let header = sign(&payload, &secret(), t);
            prop_assert!(verifier().verify_at(&payload, &header, at(t)).is_ok());
        }
    }
}
