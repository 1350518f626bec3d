//! The stand-in's memory and the decision for each request: the invoices,
//! the scripts, the stored idempotent responses, the request log and the
//! charges.
//!
//! Everything here is synchronous and runs under one mutex, so requests are
//! handled one at a time, like Stripe serializes requests that share an
//! idempotency key.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use citadel_core::ids::InvoiceId;
use citadel_core::money::Currency;
use serde_json::Value;

use super::wire;
use super::{RecordedRequest, ResponseKind, Scripted};
use crate::fixtures;

/// The amount due of an invoice without [`State::set_invoice`], should the
/// sample invoice lack one: its own 1000 (minor units).
const DEFAULT_AMOUNT_DUE: i64 = 1000;

/// One invoice as the stand-in keeps it.
#[derive(Debug, Clone)]
pub(super) struct InvoiceState {
    pub(super) amount_due: i64,
    pub(super) currency: Currency,
    pub(super) amount_paid: i64,
    /// Payment attempts, counting the failed one that started the recovery.
    pub(super) attempt_count: u32,
    pub(super) paid: bool,
    /// Whether the invoice was marked uncollectible.
    pub(super) uncollectible: bool,
    /// Successful charges the stand-in made for this invoice.
    pub(super) charges: usize,
}

impl InvoiceState {
    /// Creates an open invoice with the sample invoice's amount and currency
    /// (1000 usd), after one failed attempt.
    fn from_fixture() -> Self {
        let sample = fixtures::resource("invoice");
        let amount_due = sample
            .as_ref()
            .and_then(|invoice| invoice["amount_due"].as_i64())
            .unwrap_or(DEFAULT_AMOUNT_DUE);
        let currency = sample
            .as_ref()
            .and_then(|invoice| invoice["currency"].as_str())
            .and_then(|code| Currency::parse(code).ok());

        Self::open(amount_due, currency.unwrap_or(usd()))
    }

    fn open(amount_due: i64, currency: Currency) -> Self {
        Self {
            amount_due,
            currency,
            amount_paid: 0,
            attempt_count: 1,
            paid: false,
            uncollectible: false,
            charges: 0,
        }
    }

    pub(super) fn status(&self) -> &'static str {
        match (self.paid, self.uncollectible) {
            (true, _) => "paid",
            (false, true) => "uncollectible",
            (false, false) => "open",
        }
    }
}

fn usd() -> Currency {
    // "usd" is three ASCII letters, which `Currency::parse` always accepts.
    Currency::parse("usd").unwrap_or_else(|_| unreachable!("usd is a valid currency"))
}

/// A request the stand-in received, as the handler passes it on.
#[derive(Debug)]
pub(super) struct IncomingRequest {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) stripe_account: Option<String>,
    pub(super) idempotency_key: Option<String>,
    /// Whether the request carried a bearer API key.
    pub(super) authorized: bool,
    /// The form-encoded parameters, compared when a key is reused.
    pub(super) params: String,
}

/// The response to send.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Value,
    /// Whether this is a stored response sent again for a reused key, which
    /// Stripe marks with `Idempotent-Replayed: true`.
    pub(super) replayed: bool,
    /// Whether to close the connection instead of sending the response.
    pub(super) drop_connection: bool,
}

/// The outcome of running a request.
struct Execution {
    reply: Reply,
    kind: ResponseKind,
    /// Whether Stripe would store the response under the request's key.
    /// Stripe stores the result of every request that began executing. It
    /// rejects rate-limited requests and [`Scripted::ServerError`] before
    /// that, so a retry with the same key runs again.
    store: bool,
}

impl Execution {
    fn new(status: u16, body: Value, kind: ResponseKind, store: bool) -> Self {
        let reply = Reply {
            status,
            body,
            replayed: false,
            drop_connection: false,
        };
        Self { reply, kind, store }
    }
}

/// A response stored under an `(account, idempotency key)` pair.
#[derive(Debug, Clone)]
struct StoredResponse {
    path: String,
    params: String,
    status: u16,
    body: Value,
}

type KeyScope = (Option<String>, String);

/// Everything the stand-in remembers.
#[derive(Debug, Default)]
pub(super) struct State {
    invoices: HashMap<InvoiceId, InvoiceState>,
    scripts: HashMap<InvoiceId, VecDeque<Scripted>>,
    stored: HashMap<KeyScope, StoredResponse>,
    requests: Vec<RecordedRequest>,
    charges_made: u64,
}

impl State {
    pub(super) fn script(&mut self, invoice: &InvoiceId, outcomes: VecDeque<Scripted>) {
        self.scripts.insert(invoice.clone(), outcomes);
    }

    pub(super) fn set_invoice(&mut self, invoice: &InvoiceId, amount_due: i64, currency: Currency) {
        self.invoices
            .insert(invoice.clone(), InvoiceState::open(amount_due, currency));
    }

    pub(super) fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.clone()
    }

    pub(super) fn charges(&self, invoice: &InvoiceId) -> usize {
        self.invoices.get(invoice).map_or(0, |state| state.charges)
    }

    /// Handles `POST /v1/invoices/{invoice}/pay` and records it.
    pub(super) fn pay(
        &mut self,
        request: &IncomingRequest,
        invoice: &str,
        now: DateTime<Utc>,
    ) -> Reply {
        let (reply, kind) = self.decide_pay(request, invoice, now);
        self.record(request, &reply, kind, now);
        reply
    }

    /// Handles `POST /v1/invoices/{invoice}/mark_uncollectible` and records
    /// it.
    pub(super) fn mark_uncollectible(
        &mut self,
        request: &IncomingRequest,
        invoice: &str,
        now: DateTime<Utc>,
    ) -> Reply {
        let (reply, kind) = self.decide(request, |state| match InvoiceId::parse(invoice) {
            Ok(id) => state.execute_mark_uncollectible(&id, now),
            Err(_) => Execution::new(
                404,
                wire::no_such_invoice(invoice),
                ResponseKind::NotFound,
                true,
            ),
        });
        self.record(request, &reply, kind, now);
        reply
    }

    /// Handles `DELETE /v1/subscriptions/{subscription}` and records it.
    pub(super) fn cancel_subscription(
        &mut self,
        request: &IncomingRequest,
        subscription: &str,
        now: DateTime<Utc>,
    ) -> Reply {
        let (reply, kind) = self.decide(request, |_| {
            let body = wire::canceled_subscription(subscription, now);
            Execution::new(200, body, ResponseKind::SubscriptionCanceled, true)
        });
        self.record(request, &reply, kind, now);
        reply
    }

    fn execute_mark_uncollectible(&mut self, id: &InvoiceId, now: DateTime<Utc>) -> Execution {
        let invoice = self.invoice(id);
        if invoice.paid {
            let body = wire::not_open_for_uncollectible();
            return Execution::new(400, body, ResponseKind::AlreadyPaid, true);
        }
        invoice.uncollectible = true;
        let body = wire::invoice(id.as_str(), invoice, now);
        Execution::new(200, body, ResponseKind::MarkedUncollectible, true)
    }

    /// Handles a request to any other route and records it.
    pub(super) fn unknown_route(&mut self, request: &IncomingRequest, now: DateTime<Utc>) -> Reply {
        let body = wire::unrecognized_url(&request.method, &request.path);
        let execution = Execution::new(404, body, ResponseKind::NotFound, false);
        self.record(request, &execution.reply, execution.kind, now);
        execution.reply
    }

    fn decide_pay(
        &mut self,
        request: &IncomingRequest,
        invoice: &str,
        now: DateTime<Utc>,
    ) -> (Reply, ResponseKind) {
        self.decide(request, |state| match InvoiceId::parse(invoice) {
            Ok(invoice) => state.execute(&invoice, now),
            Err(_) => Execution::new(
                404,
                wire::no_such_invoice(invoice),
                ResponseKind::NotFound,
                true,
            ),
        })
    }

    /// Checks the API key, replays a stored response for a reused key, or
    /// runs `execute` and stores its response under the key, as Stripe
    /// does for every POST and DELETE.
    fn decide(
        &mut self,
        request: &IncomingRequest,
        execute: impl FnOnce(&mut Self) -> Execution,
    ) -> (Reply, ResponseKind) {
        if !request.authorized {
            let execution = Execution::new(
                401,
                wire::missing_api_key(),
                ResponseKind::Unauthorized,
                false,
            );
            return (execution.reply, execution.kind);
        }

        let scope = request
            .idempotency_key
            .as_ref()
            .map(|key| (request.stripe_account.clone(), key.clone()));
        if let Some(scope) = &scope
            && let Some(stored) = self.stored.get(scope)
        {
            return replay(stored, request, &scope.1);
        }

        let execution = execute(self);
        if execution.store
            && let Some(scope) = scope
        {
            self.store(scope, request, &execution.reply);
        }
        (execution.reply, execution.kind)
    }

    fn store(&mut self, scope: KeyScope, request: &IncomingRequest, reply: &Reply) {
        let stored = StoredResponse {
            path: request.path.clone(),
            params: request.params.clone(),
            status: reply.status,
            body: reply.body.clone(),
        };
        self.stored.insert(scope, stored);
    }

    /// Runs a payment: the invoice's state first (a paid invoice cannot be
    /// paid again, whatever the script contains), then the next scripted
    /// outcome.
    fn execute(&mut self, invoice: &InvoiceId, now: DateTime<Utc>) -> Execution {
        if self.invoice(invoice).paid {
            return Execution::new(400, wire::already_paid(), ResponseKind::AlreadyPaid, true);
        }

        match self.next_scripted(invoice) {
            Scripted::Pay => self.charge(invoice, now, false),
            Scripted::ChargeThenDrop => self.charge(invoice, now, true),
            Scripted::Decline { code, decline_code } => {
                self.decline(invoice, &code, decline_code.as_deref())
            }
            Scripted::ServerError => {
                Execution::new(500, wire::server_error(), ResponseKind::ServerError, false)
            }
            Scripted::StoredServerError => {
                Execution::new(500, wire::server_error(), ResponseKind::ServerError, true)
            }
            Scripted::RateLimited => {
                Execution::new(429, wire::rate_limited(), ResponseKind::RateLimited, false)
            }
            Scripted::AlreadyPaid => self.paid_elsewhere(invoice),
            Scripted::Processing => self.start_processing(invoice, now),
        }
    }

    fn invoice(&mut self, invoice: &InvoiceId) -> &mut InvoiceState {
        self.invoices
            .entry(invoice.clone())
            .or_insert_with(InvoiceState::from_fixture)
    }

    /// Takes the next scripted outcome; the last one repeats, and an
    /// invoice without a script is paid.
    fn next_scripted(&mut self, invoice: &InvoiceId) -> Scripted {
        let Some(queue) = self.scripts.get_mut(invoice) else {
            return Scripted::Pay;
        };
        let next = if queue.len() > 1 {
            queue.pop_front()
        } else {
            queue.front().cloned()
        };
        next.unwrap_or(Scripted::Pay)
    }

    fn charge(&mut self, id: &InvoiceId, now: DateTime<Utc>, drop_connection: bool) -> Execution {
        let invoice = self.invoice(id);
        invoice.attempt_count += 1;
        invoice.amount_paid = invoice.amount_due;
        invoice.paid = true;
        invoice.charges += 1;
        let body = wire::invoice(id.as_str(), invoice, now);

        let kind = if drop_connection {
            ResponseKind::Dropped
        } else {
            ResponseKind::Paid
        };
        let mut execution = Execution::new(200, body, kind, true);
        execution.reply.drop_connection = drop_connection;
        execution
    }

    fn decline(&mut self, id: &InvoiceId, code: &str, decline_code: Option<&str>) -> Execution {
        self.invoice(id).attempt_count += 1;
        self.charges_made += 1;
        let charge = format!("ch_standin{}", self.charges_made);

        let body = wire::card_declined(code, decline_code, &charge);
        let kind = ResponseKind::Declined {
            code: code.to_owned(),
            decline_code: decline_code.map(str::to_owned),
        };
        Execution::new(402, body, kind, true)
    }

    /// Counts an attempt and returns the invoice still open, as Stripe does
    /// for a payment that settles later.
    fn start_processing(&mut self, id: &InvoiceId, now: DateTime<Utc>) -> Execution {
        let invoice = self.invoice(id);
        invoice.attempt_count += 1;
        let body = wire::invoice(id.as_str(), invoice, now);
        Execution::new(200, body, ResponseKind::Processing, true)
    }

    /// Marks the invoice paid without a charge by the stand-in, as when the
    /// customer paid it another way, and responds as Stripe does then.
    fn paid_elsewhere(&mut self, id: &InvoiceId) -> Execution {
        let invoice = self.invoice(id);
        invoice.paid = true;
        invoice.amount_paid = invoice.amount_due;
        Execution::new(400, wire::already_paid(), ResponseKind::AlreadyPaid, true)
    }

    fn record(
        &mut self,
        request: &IncomingRequest,
        reply: &Reply,
        outcome: ResponseKind,
        now: DateTime<Utc>,
    ) {
        let status = (!reply.drop_connection).then_some(reply.status);
        self.requests.push(RecordedRequest {
            method: request.method.clone(),
            path: request.path.clone(),
            stripe_account: request.stripe_account.clone(),
            idempotency_key: request.idempotency_key.clone(),
            at: now,
            status,
            outcome,
        });
    }
}

/// Sends a stored response again, or rejects a key reused for another
/// request, as Stripe does.
fn replay(stored: &StoredResponse, request: &IncomingRequest, key: &str) -> (Reply, ResponseKind) {
    if stored.path != request.path || stored.params != request.params {
        let execution = Execution::new(
            400,
            wire::idempotency_mismatch(key),
            ResponseKind::IdempotencyMismatch,
            false,
        );
        return (execution.reply, execution.kind);
    }

    let reply = Reply {
        status: stored.status,
        body: stored.body.clone(),
        replayed: true,
        drop_connection: false,
    };
    let kind = ResponseKind::Replayed {
        status: stored.status,
    };
    (reply, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVOICE: &str = "in_1Pgc6tB7WZ01zgkWu9fdqL6I";

    fn invoice() -> InvoiceId {
        InvoiceId::parse(INVOICE).unwrap()
    }

    fn request(account: Option<&str>, key: Option<&str>) -> IncomingRequest {
        IncomingRequest {
            method: "POST".to_owned(),
            path: format!("/v1/invoices/{INVOICE}/pay"),
            stripe_account: account.map(str::to_owned),
            idempotency_key: key.map(str::to_owned),
            authorized: true,
            params: String::new(),
        }
    }

    fn pay(state: &mut State, request: &IncomingRequest) -> Reply {
        state.pay(request, INVOICE, Utc::now())
    }

    #[test]
    fn unscripted_invoice_is_paid_with_fixture_amount() {
        let mut state = State::default();

        let reply = pay(&mut state, &request(None, Some("k1")));

        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["object"], "invoice");
        assert_eq!(reply.body["id"], INVOICE);
        assert_eq!(reply.body["status"], "paid");
        assert_eq!(reply.body["amount_paid"], 1000);
        assert_eq!(reply.body["amount_remaining"], 0);
        assert_eq!(reply.body["currency"], "usd");
        assert_eq!(reply.body["attempt_count"], 2);
        assert_eq!(state.charges(&invoice()), 1);
    }

    #[test]
    fn set_invoice_changes_amount_and_currency() {
        let mut state = State::default();
        state.set_invoice(&invoice(), 2500, Currency::parse("eur").unwrap());

        let reply = pay(&mut state, &request(None, Some("k1")));

        assert_eq!(reply.body["amount_due"], 2500);
        assert_eq!(reply.body["amount_paid"], 2500);
        assert_eq!(reply.body["currency"], "eur");
    }

    #[test]
    fn script_runs_in_order_and_last_repeats() {
        let mut state = State::default();
        let script = [
            Scripted::insufficient_funds(),
            Scripted::ServerError,
            Scripted::RateLimited,
        ];
        state.script(&invoice(), script.into_iter().collect());

        let statuses: Vec<u16> = ["k1", "k2", "k3", "k4"]
            .into_iter()
            .map(|key| pay(&mut state, &request(None, Some(key))).status)
            .collect();

        assert_eq!(statuses, [402, 500, 429, 429]);
    }

    #[test]
    fn same_key_replays_without_charging_again() {
        let mut state = State::default();

        let first = pay(&mut state, &request(Some("acct_1"), Some("k1")));
        let second = pay(&mut state, &request(Some("acct_1"), Some("k1")));

        assert_eq!(second.status, 200);
        assert_eq!(second.body, first.body);
        assert!(second.replayed);
        assert_eq!(state.charges(&invoice()), 1);
        assert_eq!(
            state.requests()[1].outcome,
            ResponseKind::Replayed { status: 200 }
        );
    }

    #[test]
    fn same_key_on_another_account_is_another_request() {
        let mut state = State::default();
        state.script(&invoice(), [Scripted::stolen_card()].into_iter().collect());

        pay(&mut state, &request(Some("acct_1"), Some("k1")));
        let other = pay(&mut state, &request(Some("acct_2"), Some("k1")));

        assert!(!other.replayed);
        assert_eq!(other.status, 402);
    }

    #[test]
    fn stored_decline_is_replayed() {
        let mut state = State::default();
        state.script(
            &invoice(),
            [Scripted::insufficient_funds(), Scripted::Pay]
                .into_iter()
                .collect(),
        );

        let first = pay(&mut state, &request(None, Some("k1")));
        let again = pay(&mut state, &request(None, Some("k1")));

        assert_eq!(first.status, 402);
        assert_eq!(again.status, 402);
        assert_eq!(again.body, first.body);
        assert_eq!(state.charges(&invoice()), 0);
    }

    #[test]
    fn server_error_is_not_stored() {
        let mut state = State::default();
        state.script(
            &invoice(),
            [Scripted::ServerError, Scripted::Pay].into_iter().collect(),
        );

        let first = pay(&mut state, &request(None, Some("k1")));
        let retry = pay(&mut state, &request(None, Some("k1")));

        assert_eq!(first.status, 500);
        assert_eq!(retry.status, 200);
        assert!(!retry.replayed);
        assert_eq!(state.charges(&invoice()), 1);
    }

    #[test]
    fn stored_server_error_is_replayed() {
        let mut state = State::default();
        state.script(
            &invoice(),
            [Scripted::StoredServerError, Scripted::Pay]
                .into_iter()
                .collect(),
        );

        let first = pay(&mut state, &request(None, Some("k1")));
        let retry = pay(&mut state, &request(None, Some("k1")));
        let new_key = pay(&mut state, &request(None, Some("k2")));

        assert_eq!(first.status, 500);
        assert_eq!(retry.status, 500);
        assert!(retry.replayed);
        assert_eq!(new_key.status, 200);
        assert_eq!(state.charges(&invoice()), 1);
    }

    #[test]
    fn charge_then_drop_stores_paid_response() {
        let mut state = State::default();
        state.script(&invoice(), [Scripted::ChargeThenDrop].into_iter().collect());

        let dropped = pay(&mut state, &request(None, Some("k1")));
        let retry = pay(&mut state, &request(None, Some("k1")));

        assert!(dropped.drop_connection);
        assert_eq!(retry.status, 200);
        assert!(retry.replayed);
        assert_eq!(retry.body["status"], "paid");
        assert_eq!(state.charges(&invoice()), 1);
        assert_eq!(state.requests()[0].status, None);
        assert_eq!(state.requests()[0].outcome, ResponseKind::Dropped);
    }

    #[test]
    fn paid_invoice_rejects_new_key() {
        let mut state = State::default();

        pay(&mut state, &request(None, Some("k1")));
        let again = pay(&mut state, &request(None, Some("k2")));

        assert_eq!(again.status, 400);
        assert_eq!(again.body["error"]["message"], "Invoice is already paid");
        assert_eq!(state.charges(&invoice()), 1);
    }

    #[test]
    fn already_paid_script_marks_invoice_paid() {
        let mut state = State::default();
        state.script(
            &invoice(),
            [Scripted::AlreadyPaid, Scripted::Pay].into_iter().collect(),
        );

        let first = pay(&mut state, &request(None, Some("k1")));
        let second = pay(&mut state, &request(None, Some("k2")));

        assert_eq!(first.status, 400);
        assert_eq!(second.status, 400);
        assert_eq!(state.charges(&invoice()), 0);
    }

    #[test]
    fn reused_key_with_other_params_is_rejected() {
        let mut state = State::default();
        pay(&mut state, &request(None, Some("k1")));
        let mut other = request(None, Some("k1"));
        other.params = "forgive=true".to_owned();

        let reply = pay(&mut state, &other);

        assert_eq!(reply.status, 400);
        assert_eq!(reply.body["error"]["type"], "idempotency_error");
    }

    #[test]
    fn request_without_key_is_not_stored() {
        let mut state = State::default();
        state.script(
            &invoice(),
            [Scripted::insufficient_funds(), Scripted::Pay]
                .into_iter()
                .collect(),
        );

        let first = pay(&mut state, &request(None, None));
        let second = pay(&mut state, &request(None, None));

        assert_eq!(first.status, 402);
        assert_eq!(second.status, 200);
    }

    #[test]
    fn missing_api_key_is_unauthorized() {
        let mut state = State::default();
        let mut unauthorized = request(None, Some("k1"));
        unauthorized.authorized = false;

        let reply = pay(&mut state, &unauthorized);

        assert_eq!(reply.status, 401);
        assert_eq!(state.charges(&invoice()), 0);
        assert_eq!(state.requests()[0].outcome, ResponseKind::Unauthorized);
    }

    #[test]
    fn invalid_invoice_id_is_not_found() {
        let mut state = State::default();

        let reply = state.pay(&request(None, Some("k1")), "ch_123", Utc::now());

        assert_eq!(reply.status, 404);
        assert_eq!(reply.body["error"]["code"], "resource_missing");
    }

    #[test]
    fn decline_body_is_stripe_card_error() {
        let mut state = State::default();
        state.script(&invoice(), [Scripted::stolen_card()].into_iter().collect());

        let reply = pay(&mut state, &request(None, Some("k1")));

        let error = &reply.body["error"];
        assert_eq!(reply.status, 402);
        assert_eq!(error["type"], "card_error");
        assert_eq!(error["code"], "card_declined");
        assert_eq!(error["decline_code"], "stolen_card");
        assert_eq!(error["message"], "Your card was declined.");
        assert!(error["charge"].as_str().unwrap().starts_with("ch_"));
        assert!(
            error["doc_url"]
                .as_str()
                .unwrap()
                .ends_with("card-declined")
        );
    }
}
