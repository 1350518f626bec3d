//! Stripe's own sample objects, to build test events and stand-in responses.
//!
//! The objects come from `fixtures3.json` of Stripe's public `stripe/openapi`
//! repository (MIT licence), embedded in this crate unchanged; the crate's
//! `fixtures/README.md` names the commit. They are in the shape of the API
//! version current in August 2026. Build a test case by changing fields of a
//! copy, never by writing an object from scratch:
//!
//! ```
//! use citadel_stripe::fixtures;
//!
//! let mut invoice = fixtures::resource("invoice").expect("fixture exists");
//! invoice["status"] = "open".into();
//! invoice["attempt_count"] = 1.into();
//!
//! let event = fixtures::event("invoice.payment_failed", invoice);
//! assert_eq!(event["data"]["object"]["status"], "open");
//! ```

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The fixture file as Stripe publishes it.
const FIXTURES_JSON: &str = include_str!("../fixtures/fixtures3.json");

fn resources() -> &'static Map<String, Value> {
    static RESOURCES: OnceLock<Map<String, Value>> = OnceLock::new();
    RESOURCES.get_or_init(|| {
        // The embedded file is fixed at build time, and a unit test checks
        // that it parses, so the empty fallback is never taken in practice.
        serde_json::from_str::<Value>(FIXTURES_JSON)
            .ok()
            .and_then(|mut file| file.get_mut("resources").map(Value::take))
            .and_then(|resources| match resources {
                Value::Object(map) => Some(map),
                _ => None,
            })
            .unwrap_or_default()
    })
}

/// Returns a copy of Stripe's sample object named `name`, such as `invoice`,
/// `charge`, `payment_intent`, `subscription` or `event`, or `None` when the
/// file has no object of that name.
pub fn resource(name: &str) -> Option<Value> {
    resources().get(name).cloned()
}

/// Builds an event of type `event_type` around `object`, from Stripe's sample
/// `event`: its id, `created` and `livemode` stay as in the sample, and its
/// `data.object` becomes `object`.
///
/// Set `account` on the result for a Connect event, and `api_version` for a
/// given API version (the sample has `null`).
pub fn event(event_type: &str, object: Value) -> Value {
    let mut event = resource("event").unwrap_or_else(|| Value::Object(Map::new()));
    event["type"] = Value::from(event_type);
    event["data"] = serde_json::json!({ "object": object });
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_file_has_the_objects_the_crate_uses() {
        for name in [
            "event",
            "invoice",
            "charge",
            "payment_intent",
            "subscription",
        ] {
            let object = resource(name);
            assert!(object.is_some(), "{name} missing");
            assert_eq!(object.unwrap()["object"], name);
        }
    }

    #[test]
    fn unknown_resource_is_none() {
        assert_eq!(resource("no_such_object"), None);
    }

    #[test]
    fn event_wraps_the_object() {
        let event = event("invoice.paid", serde_json::json!({"id": "in_1"}));
        assert_eq!(event["object"], "event");
        assert_eq!(event["type"], "invoice.paid");
        assert_eq!(event["data"]["object"]["id"], "in_1");
    }
}
