//! Decline classification: which declines are never retried, which are, and
//! which each merchant decides.
//!
//! [`classify_with`] reads every signal a decline carries, in this order, and
//! the first that applies decides:
//!
//! 1. a fraud outcome from `charge.outcome`: Radar blocked the charge
//!    (`outcome.type` `blocked`) or rated it `highest` risk;
//! 2. an instruction never to try the card again: Stripe's advice code
//!    `do_not_try_again`, or the Mastercard merchant advice codes `03` (do
//!    not try again) and `21` (payment cancelled);
//! 3. the codes (`decline_code`, then `code`) against [`NEVER_RETRY_CODES`],
//!    then the merchant's own lists ([`DeclineOverrides`]), then
//!    [`RETRY_CODES`] and [`CONFIGURABLE_CODES`];
//! 4. anything else, including codes the table does not know, is retried.
//!
//! Every result carries a reason sentence for the activity ledger.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::payment::Decline;

/// Decline codes that are never retried automatically, whatever the
/// merchant's policy lists.
///
/// Visa's reattempt rules put the issuer answers behind most of them (lost,
/// stolen, pick up, invalid account, not permitted, revoked authorization)
/// in decline category 1, which must never be retried.
/// `authentication_required` needs the customer, so no off-session retry
/// can pass. `fraudulent`, `merchant_blacklist` and `highest_risk_level` are
/// fraud outcomes.
pub const NEVER_RETRY_CODES: &[&str] = &[
    "stolen_card",
    "lost_card",
    "pickup_card",
    "incorrect_number",
    "invalid_account",
    "restricted_card",
    "revocation_of_authorization",
    "revocation_of_all_authorizations",
    "security_violation",
    "transaction_not_allowed",
    "authentication_required",
    "fraudulent",
    "merchant_blacklist",
    "highest_risk_level",
];

/// Decline codes that a later retry can succeed on: the issuer was
/// unavailable, the account lacked funds, or the issuer gave no reason.
pub const RETRY_CODES: &[&str] = &[
    "insufficient_funds",
    "processing_error",
    "try_again_later",
    "card_velocity_exceeded",
    "generic_decline",
    "call_issuer",
];

/// Decline codes whose treatment each merchant chooses: retried unless the
/// merchant lists them in [`DeclineOverrides::never_retry`].
///
/// `do_not_honor` is a decline without a reason from the issuer, and often
/// clears. An `expired_card` can be paid after Stripe's card account
/// updater fetches the new expiry date, but otherwise fails every time.
pub const CONFIGURABLE_CODES: &[&str] = &["do_not_honor", "expired_card"];

/// The advice code with which Stripe passes on a card network's instruction
/// never to retry the card.
pub const DO_NOT_TRY_AGAIN: &str = "do_not_try_again";

/// Mastercard merchant advice codes (Stripe's `network_advice_code`) that
/// forbid another attempt: `03` (do not try again) and `21` (payment
/// cancelled by the cardholder).
pub const MASTERCARD_DO_NOT_RETRY: &[&str] = &["03", "21"];

/// The treatment a decline gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineClass {
    /// Retrying may succeed later (insufficient funds, issuer unavailable).
    Soft,
    /// Must not be retried.
    Hard,
}

impl DeclineClass {
    /// Returns `retry` or `never retry`, as the activity ledger writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeclineClass::Soft => "retry",
            DeclineClass::Hard => "never retry",
        }
    }
}

impl fmt::Display for DeclineClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A merchant's changes to the decline table.
///
/// A code in `never_retry` is never retried, and may be any code. A code in
/// `retry` is retried, but only a [`CONFIGURABLE_CODES`] entry or a code the
/// table does not know can be listed: [`DeclineOverrides::validate`] rejects
/// the rest, and [`classify_with`] ignores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclineOverrides {
    /// Codes this merchant never retries, such as `expired_card`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub never_retry: Vec<String>,
    /// Codes this merchant retries although the table does not say so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry: Vec<String>,
}

/// An error returned for decline overrides that would retry a card the
/// table never retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid decline override: {code:?} is never retried (card network rules and Stripe's \
     decline reference) and cannot be listed under retry; remove it from the merchant's policy"
)]
pub struct ForbiddenRetryOverride {
    /// The code listed under `retry`.
    pub code: String,
}

impl DeclineOverrides {
    /// Checks that no `retry` entry is a never-retry code.
    ///
    /// # Errors
    ///
    /// [`ForbiddenRetryOverride`] naming the first such code.
    pub fn validate(&self) -> Result<(), ForbiddenRetryOverride> {
        let forbidden = |code: &&String| NEVER_RETRY_CODES.contains(&code.as_str());
        match self.retry.iter().find(forbidden) {
            Some(code) => Err(ForbiddenRetryOverride { code: code.clone() }),
            None => Ok(()),
        }
    }
}

/// A decline's class and the sentence that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// Whether the decline is retried.
    pub class: DeclineClass,
    /// Why, such as `stolen_card is never retried (decline table)`.
    pub reason: String,
}

impl Classification {
    fn hard(reason: String) -> Self {
        Self {
            class: DeclineClass::Hard,
            reason,
        }
    }

    fn soft(reason: String) -> Self {
        Self {
            class: DeclineClass::Soft,
            reason,
        }
    }
}

/// Classifies a decline with the default table and no merchant overrides.
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
    classify_with(decline, &DeclineOverrides::default()).class
}

/// Classifies a decline with a merchant's overrides, and says why.
///
/// # Examples
///
/// ```
/// use citadel_core::payment::Decline;
/// use citadel_core::policy::{classify_with, DeclineClass, DeclineOverrides};
///
/// let expired = Decline::with_decline_code("expired_card");
/// let strict = DeclineOverrides {
///     never_retry: vec!["expired_card".to_owned()],
///     ..DeclineOverrides::default()
/// };
/// assert_eq!(classify_with(&expired, &DeclineOverrides::default()).class, DeclineClass::Soft);
/// let decided = classify_with(&expired, &strict);
/// assert_eq!(decided.class, DeclineClass::Hard);
/// assert!(decided.reason.contains("merchant's policy"));
/// ```
pub fn classify_with(decline: &Decline, overrides: &DeclineOverrides) -> Classification {
    if let Some(fraud) = fraud_outcome(decline) {
        return fraud;
    }
    if let Some(advice) = advice_outcome(decline) {
        return advice;
    }

    let codes: Vec<&str> = [decline.decline_code.as_deref(), decline.code.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if let Some(code) = codes.iter().find(|code| NEVER_RETRY_CODES.contains(code)) {
        return Classification::hard(format!("{code} is never retried (decline table)"));
    }
    let listed = |list: &[String], code: &str| list.iter().any(|entry| entry == code);
    if let Some(code) = codes
        .iter()
        .find(|code| listed(&overrides.never_retry, code))
    {
        return Classification::hard(format!("{code} is never retried (merchant's policy)"));
    }
    if let Some(code) = codes.iter().find(|code| listed(&overrides.retry, code)) {
        return Classification::soft(format!("{code} is retried (merchant's policy)"));
    }
    if let Some(code) = codes.iter().find(|code| RETRY_CODES.contains(code)) {
        return Classification::soft(format!("{code} is retried (decline table)"));
    }
    if let Some(code) = codes.iter().find(|code| CONFIGURABLE_CODES.contains(code)) {
        return Classification::soft(format!(
            "{code} is retried (the default; a merchant can list it under never_retry)"
        ));
    }
    match codes.first() {
        Some(code) => Classification::soft(format!("{code} is not in the decline table: retried")),
        None => Classification::soft("the decline has no code: retried".to_owned()),
    }
}

/// Returns a hard class when `charge.outcome` reports fraud.
fn fraud_outcome(decline: &Decline) -> Option<Classification> {
    if decline.outcome_type.as_deref() == Some("blocked") {
        return Some(Classification::hard(
            "Radar blocked the charge as fraudulent (outcome.type blocked): never retried"
                .to_owned(),
        ));
    }
    if decline.risk_level.as_deref() == Some("highest") {
        return Some(Classification::hard(
            "Radar rated the charge highest risk (outcome.risk_level highest): never retried"
                .to_owned(),
        ));
    }
    None
}

/// Returns a hard class when Stripe or the card network advises never to
/// try the card again.
fn advice_outcome(decline: &Decline) -> Option<Classification> {
    if decline.advice_code.as_deref() == Some(DO_NOT_TRY_AGAIN) {
        return Some(Classification::hard(
            "the card network advises do_not_try_again: never retried".to_owned(),
        ));
    }
    let network = decline.network_advice_code.as_deref()?;
    MASTERCARD_DO_NOT_RETRY.contains(&network).then(|| {
        Classification::hard(format!(
            "Mastercard merchant advice code {network} forbids another attempt: never retried"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Case {
        decline_code: Option<&'static str>,
        code: Option<&'static str>,
        expected: DeclineClass,
    }

    const fn case(
        decline_code: Option<&'static str>,
        code: Option<&'static str>,
        expected: DeclineClass,
    ) -> Case {
        Case {
            decline_code,
            code,
            expected,
        }
    }

    fn decline(decline_code: Option<&str>, code: Option<&str>) -> Decline {
        Decline {
            code: code.map(str::to_owned),
            decline_code: decline_code.map(str::to_owned),
            ..Decline::default()
        }
    }

    #[test]
    fn default_table_classifies_codes() {
        use DeclineClass::{Hard, Soft};
        let cases = [
            case(Some("stolen_card"), Some("card_declined"), Hard),
            case(Some("lost_card"), None, Hard),
            case(Some("pickup_card"), None, Hard),
            case(None, Some("incorrect_number"), Hard),
            case(Some("revocation_of_authorization"), None, Hard),
            case(Some("revocation_of_all_authorizations"), None, Hard),
            case(None, Some("authentication_required"), Hard),
            case(Some("highest_risk_level"), None, Hard),
            case(Some("fraudulent"), None, Hard),
            case(Some("insufficient_funds"), Some("card_declined"), Soft),
            case(Some("processing_error"), None, Soft),
            case(Some("try_again_later"), None, Soft),
            case(Some("card_velocity_exceeded"), None, Soft),
            case(Some("generic_decline"), Some("card_declined"), Soft),
            case(Some("call_issuer"), None, Soft),
            case(Some("do_not_honor"), None, Soft),
            case(None, Some("expired_card"), Soft),
            case(Some("some_future_code"), None, Soft),
            case(None, None, Soft),
        ];
        for case in cases {
            let decline = decline(case.decline_code, case.code);
            let decided = classify_with(&decline, &DeclineOverrides::default());
            assert_eq!(
                decided.class, case.expected,
                "{:?} {:?}: {}",
                case.decline_code, case.code, decided.reason
            );
        }
    }

    #[test]
    fn every_list_entry_has_its_class() {
        for code in NEVER_RETRY_CODES {
            assert_eq!(
                classify(&Decline::with_decline_code(*code)),
                DeclineClass::Hard,
                "{code}"
            );
        }
        for code in RETRY_CODES.iter().chain(CONFIGURABLE_CODES) {
            assert_eq!(
                classify(&Decline::with_decline_code(*code)),
                DeclineClass::Soft,
                "{code}"
            );
        }
    }

    #[test]
    fn fraud_outcomes_are_hard() {
        let blocked = Decline {
            outcome_type: Some("blocked".to_owned()),
            decline_code: Some("generic_decline".to_owned()),
            ..Decline::default()
        };
        let decided = classify_with(&blocked, &DeclineOverrides::default());
        assert_eq!(decided.class, DeclineClass::Hard);
        assert!(
            decided.reason.contains("outcome.type blocked"),
            "{}",
            decided.reason
        );

        let risky = Decline {
            risk_level: Some("highest".to_owned()),
            ..Decline::default()
        };
        assert_eq!(classify(&risky), DeclineClass::Hard);

        let elevated = Decline {
            risk_level: Some("elevated".to_owned()),
            outcome_type: Some("issuer_declined".to_owned()),
            ..Decline::default()
        };
        assert_eq!(classify(&elevated), DeclineClass::Soft);
    }

    #[test]
    fn advice_codes_table() {
        let cases = [
            (Some("do_not_try_again"), None, DeclineClass::Hard),
            (Some("try_again_later"), None, DeclineClass::Soft),
            (Some("confirm_card_data"), None, DeclineClass::Soft),
            (None, Some("03"), DeclineClass::Hard),
            (None, Some("21"), DeclineClass::Hard),
            (None, Some("02"), DeclineClass::Soft),
            (None, Some("24"), DeclineClass::Soft),
        ];
        for (advice, network, expected) in cases {
            let decline = Decline {
                decline_code: Some("insufficient_funds".to_owned()),
                advice_code: advice.map(str::to_owned),
                network_advice_code: network.map(str::to_owned),
                ..Decline::default()
            };
            assert_eq!(classify(&decline), expected, "{advice:?} {network:?}");
        }
    }

    #[test]
    fn merchant_overrides_table() {
        let overrides = DeclineOverrides {
            never_retry: vec!["expired_card".to_owned(), "insufficient_funds".to_owned()],
            retry: vec!["stolen_card".to_owned(), "do_not_honor".to_owned()],
        };
        let cases = [
            ("expired_card", DeclineClass::Hard),
            ("insufficient_funds", DeclineClass::Hard),
            ("do_not_honor", DeclineClass::Soft),
            ("stolen_card", DeclineClass::Hard),
            ("generic_decline", DeclineClass::Soft),
        ];
        for (code, expected) in cases {
            let decided = classify_with(&Decline::with_decline_code(code), &overrides);
            assert_eq!(decided.class, expected, "{code}: {}", decided.reason);
        }
    }

    #[test]
    fn reasons_name_the_source() {
        let table = classify_with(
            &Decline::with_decline_code("lost_card"),
            &DeclineOverrides::default(),
        );
        assert_eq!(table.reason, "lost_card is never retried (decline table)");

        let unknown = classify_with(
            &Decline::with_decline_code("new_code"),
            &DeclineOverrides::default(),
        );
        assert_eq!(
            unknown.reason,
            "new_code is not in the decline table: retried"
        );
    }

    #[test]
    fn validate_rejects_retrying_never_retry_code() {
        let overrides = DeclineOverrides {
            retry: vec!["do_not_honor".to_owned(), "lost_card".to_owned()],
            ..DeclineOverrides::default()
        };
        let error = overrides.validate().unwrap_err();
        assert_eq!(error.code, "lost_card");
        assert!(error.to_string().contains("\"lost_card\""));

        let fine = DeclineOverrides {
            retry: vec!["expired_card".to_owned()],
            never_retry: vec!["do_not_honor".to_owned()],
        };
        assert_eq!(fine.validate(), Ok(()));
    }
}
