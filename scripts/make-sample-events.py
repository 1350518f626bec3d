#!/usr/bin/env python3
"""Writes the sample Stripe events under examples/data/events/.

Every event is Stripe's own sample `event` object from fixtures3.json with its
`data.object` replaced by a copy of the sample `invoice`, `charge` or
`subscription`, changed only in the fields a failed-payment story needs. Some
invoices are rendered in the shape of API versions before 2025-03-31 (top-level
`subscription`, `charge` and `payment_intent`, `invoice` on charges), the rest
in the current shape (`parent.subscription_details`), so the example reads both.

Usage: scripts/make-sample-events.py [FIXTURES_JSON] [OUT_DIR]
"""

import copy
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "crates/citadel-stripe/fixtures/fixtures3.json"
OUT = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "examples/data/events"

OLD_VERSION = "2024-06-20"
NEW_VERSION = "2026-09-30.endive"
ALPHA = "acct_1CitadelDemoAlpha"
BRAVO = "acct_1CitadelDemoBravo"
BASE_TIME = 1795000000  # 2026-11-18T08:26:40Z

resources = json.loads(FIXTURES.read_text())["resources"]


def event(event_id, event_type, obj, created, account, api_version):
    envelope = copy.deepcopy(resources["event"])
    envelope["id"] = event_id
    envelope["type"] = event_type
    envelope["created"] = created
    envelope["api_version"] = api_version
    envelope["data"] = {"object": obj}
    if account is not None:
        envelope["account"] = account
    return envelope


def invoice(invoice_id, customer, subscription, amount, currency, status, attempt_count, old_shape, paid=False):
    obj = copy.deepcopy(resources["invoice"])
    obj.update(
        id=invoice_id,
        customer=customer,
        amount_due=amount,
        amount_paid=amount if paid else 0,
        amount_remaining=0 if paid else amount,
        currency=currency,
        status=status,
        attempt_count=attempt_count,
        attempted=attempt_count > 0,
        billing_reason="subscription_cycle",
        collection_method="charge_automatically",
    )
    obj["lines"]["data"][0]["invoice"] = invoice_id
    obj["lines"]["data"][0]["amount"] = amount
    obj["lines"]["data"][0]["currency"] = currency
    if old_shape:
        obj.pop("parent", None)
        obj["subscription"] = subscription
        obj["charge"] = "ch_" + invoice_id[3:]
        obj["payment_intent"] = "pi_" + invoice_id[3:]
    else:
        obj.pop("subscription", None)
        obj["parent"] = {
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription},
            "type": "subscription_details",
        }
    return obj


def failed_charge(invoice_id, customer, amount, currency, decline_code):
    obj = copy.deepcopy(resources["charge"])
    obj.update(
        id="ch_" + invoice_id[3:],
        amount=amount,
        currency=currency,
        customer=customer,
        captured=False,
        paid=False,
        status="failed",
        failure_code="card_declined",
        failure_message="Your card was declined.",
        invoice=invoice_id,
        payment_intent="pi_" + invoice_id[3:],
    )
    obj["outcome"].update(
        network_status="declined_by_network",
        reason=decline_code,
        seller_message="The bank returned the decline code `%s`." % decline_code,
        type="issuer_declined",
    )
    return obj


def subscription(subscription_id, customer, status):
    obj = copy.deepcopy(resources["subscription"])
    obj.update(id=subscription_id, customer=customer, status=status)
    return obj


def by_customer(envelope, request_id):
    """Marks an event as caused by the customer paying by hand on Stripe's
    hosted invoice page: a request whose idempotency key is not Citadel's."""
    envelope["request"] = {"id": request_id, "idempotency_key": "hosted-page-" + request_id[4:]}
    return envelope


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    soft = invoice("in_1CitadelSoftDecline", "cus_CitadelAlpha01", "sub_CitadelAlpha01", 2500, "usd", "open", 1, old_shape=False)
    hard = invoice("in_1CitadelHardDecline", "cus_CitadelBravo01", "sub_CitadelBravo01", 4900, "usd", "open", 1, old_shape=True)
    exhausted = invoice("in_1CitadelAlwaysDeclines", "cus_CitadelAlpha02", "sub_CitadelAlpha02", 1200, "eur", "open", 1, old_shape=True)
    voided = invoice("in_1CitadelVoidedLater", "cus_CitadelBravo02", "sub_CitadelBravo02", 3000, "usd", "open", 1, old_shape=False)
    voided_final = invoice("in_1CitadelVoidedLater", "cus_CitadelBravo02", "sub_CitadelBravo02", 3000, "usd", "void", 1, old_shape=False)
    canceled = invoice("in_1CitadelCanceledLater", "cus_CitadelAlpha03", "sub_CitadelAlpha03", 1500, "usd", "open", 1, old_shape=False)
    soft_manual = invoice("in_1CitadelSoftDecline", "cus_CitadelAlpha01", "sub_CitadelAlpha01", 2500, "usd", "open", 2, old_shape=False)
    platform = invoice("in_1CitadelPlatformOwn", "cus_CitadelPlatform1", "sub_CitadelPlatform1", 990, "usd", "open", 1, old_shape=False)

    events = {
        "01-soft-decline-payment-failed.json": event("evt_1CitadelSoft01", "invoice.payment_failed", soft, BASE_TIME, ALPHA, NEW_VERSION),
        "02-soft-decline-duplicate-delivery.json": event("evt_1CitadelSoft01", "invoice.payment_failed", soft, BASE_TIME, ALPHA, NEW_VERSION),
        "03-hard-decline-charge-failed.json": event(
            "evt_1CitadelHard01", "charge.failed",
            failed_charge("in_1CitadelHardDecline", "cus_CitadelBravo01", 4900, "usd", "stolen_card"),
            BASE_TIME + 60, BRAVO, OLD_VERSION,
        ),
        "04-hard-decline-payment-failed.json": event("evt_1CitadelHard02", "invoice.payment_failed", hard, BASE_TIME + 61, BRAVO, OLD_VERSION),
        "05-always-declines-payment-failed.json": event("evt_1CitadelExhaust01", "invoice.payment_failed", exhausted, BASE_TIME + 120, ALPHA, OLD_VERSION),
        "06-voided-payment-failed.json": event("evt_1CitadelVoid01", "invoice.payment_failed", voided, BASE_TIME + 180, BRAVO, NEW_VERSION),
        "07-voided-invoice-voided.json": event("evt_1CitadelVoid02", "invoice.voided", voided_final, BASE_TIME + 240, BRAVO, NEW_VERSION),
        "08-platform-payment-failed.json": event("evt_1CitadelPlatform01", "invoice.payment_failed", platform, BASE_TIME + 300, None, NEW_VERSION),
        "09-unhandled-plan-created.json": event(
            "evt_1CitadelPlan01", "plan.created", copy.deepcopy(resources["event"]["data"]["object"]),
            BASE_TIME + 360, ALPHA, NEW_VERSION,
        ),
        "10-customer-pays-by-hand-and-fails.json": by_customer(
            event("evt_1CitadelSoft02", "invoice.payment_failed", soft_manual, BASE_TIME + 400, ALPHA, NEW_VERSION),
            "req_CitadelHostedPage01",
        ),
        "11-canceled-payment-failed.json": event("evt_1CitadelCancel01", "invoice.payment_failed", canceled, BASE_TIME + 420, ALPHA, NEW_VERSION),
        "12-canceled-subscription-updated.json": event(
            "evt_1CitadelCancel02", "customer.subscription.updated",
            subscription("sub_CitadelAlpha03", "cus_CitadelAlpha03", "canceled"),
            BASE_TIME + 480, ALPHA, NEW_VERSION,
        ),
    }
    for name, body in events.items():
        (OUT / name).write_text(json.dumps(body, indent=2) + "\n")
    print("wrote %d events to %s" % (len(events), OUT))


if __name__ == "__main__":
    main()
