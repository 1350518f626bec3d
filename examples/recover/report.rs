//! The report the `recover` example prints: per merchant and in total.

use std::collections::BTreeMap;

use serde::Serialize;

use citadel::core::activity::ActivityFilter;
use citadel::core::ids::MerchantId;
use citadel::core::merchant::Merchant;
use citadel::core::recovery::Recovery;
use citadel::core::store::{Store, TaskCounts, TaskFilter};
use citadel::postgres::PgStore;
use citadel::stripe::stand_in::StandIn;

/// Amounts in minor units per currency code.
type Amounts = BTreeMap<String, i64>;

/// The outcome of one invoice.
#[derive(Debug, Serialize)]
pub(crate) struct InvoiceReport {
    merchant_id: MerchantId,
    state: String,
    retries: i32,
    reason: Option<String>,
    last_decline: Option<String>,
    charges_seen_by_stand_in: Option<usize>,
}

/// Figures of one merchant.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Figures {
    failed_payments: i64,
    retries_attempted: i64,
    recovered_count: i64,
    recovered_amount: Amounts,
    lost_count: i64,
    lost_amount: Amounts,
}

/// One merchant's part of the report.
#[derive(Debug, Serialize)]
pub(crate) struct MerchantReport {
    id: MerchantId,
    name: String,
    account: Option<String>,
    #[serde(flatten)]
    figures: Figures,
    tasks: TaskCounts,
}

/// The whole report; `--json` prints it as is.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) database: &'static str,
    pub(crate) stripe: &'static str,
    pub(crate) events_received: u64,
    pub(crate) events_applied: u64,
    pub(crate) events_duplicate: u64,
    pub(crate) events_ignored: u64,
    pub(crate) events_unknown_account: u64,
    pub(crate) events_rejected: u64,
    #[serde(flatten)]
    totals: Figures,
    tasks: TaskCounts,
    decisions: BTreeMap<String, u64>,
    decisions_by_reason: BTreeMap<String, u64>,
    invoices: BTreeMap<String, InvoiceReport>,
    merchants: Vec<MerchantReport>,
    stand_in_requests: Option<usize>,
}

impl Report {
    pub(crate) fn new(stand_in: bool, ephemeral: bool) -> Self {
        Self {
            database: if ephemeral {
                "throwaway PostgreSQL"
            } else {
                "DATABASE_URL"
            },
            stripe: if stand_in {
                "local Stripe stand-in"
            } else {
                "Stripe API (STRIPE_SECRET_KEY)"
            },
            ..Self::default()
        }
    }

    /// Reads the figures back from the store, as an operator would.
    pub(crate) async fn collect(
        &mut self,
        store: &PgStore,
        merchants: &BTreeMap<MerchantId, Merchant>,
        stand_in: Option<&StandIn>,
    ) -> anyhow::Result<()> {
        self.tasks = store.task_counts().await?;
        for merchant in merchants.values() {
            let figures = merchant_figures(store, merchant.id).await?;
            add_figures(&mut self.totals, &figures);
            self.merchants.push(MerchantReport {
                id: merchant.id,
                name: merchant.name.clone(),
                account: merchant.account_id.as_ref().map(ToString::to_string),
                figures,
                tasks: merchant_tasks(store, merchant.id).await?,
            });
        }
        for recovery in store.list_recoveries(None).await? {
            let key = decision_key(&recovery);
            *self.decisions_by_reason.entry(key).or_default() += 1;
            let charges = stand_in.map(|stand_in| stand_in.charges(&recovery.invoice_id));
            self.invoices.insert(
                recovery.invoice_id.to_string(),
                InvoiceReport {
                    merchant_id: recovery.merchant_id,
                    state: recovery.status.to_string(),
                    retries: recovery.retries_made,
                    reason: recovery.close_reason.clone(),
                    last_decline: recovery
                        .last_decline
                        .as_ref()
                        .map(|d| d.reason().to_owned()),
                    charges_seen_by_stand_in: charges,
                },
            );
        }
        self.count_decisions(store).await?;
        self.stand_in_requests = stand_in.map(|stand_in| stand_in.requests().len());
        Ok(())
    }

    /// Counts the activity ledger's rows by kind, page by page.
    async fn count_decisions(&mut self, store: &PgStore) -> anyhow::Result<()> {
        let mut filter = ActivityFilter {
            limit: Some(1000),
            ..ActivityFilter::default()
        };
        loop {
            let page = store.list_activity(&filter).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            filter.before = Some(last.id);
            for entry in &page {
                *self
                    .decisions
                    .entry(entry.entry.kind.to_string())
                    .or_default() += 1;
            }
        }
    }

    /// Prints the report for a person.
    pub(crate) fn print(&self) {
        println!(
            "Citadel recovery report ({}, {})",
            self.database, self.stripe
        );
        println!();
        println!(
            "events: {} received, {} applied, {} duplicate, {} ignored, {} for unknown accounts, {} rejected",
            self.events_received,
            self.events_applied,
            self.events_duplicate,
            self.events_ignored,
            self.events_unknown_account,
            self.events_rejected
        );
        for merchant in &self.merchants {
            let account = merchant.account.as_deref().unwrap_or("platform account");
            println!();
            println!("merchant {} ({account})", merchant.id);
            print_figures(&merchant.figures);
        }
        println!();
        println!("total");
        print_figures(&self.totals);
        println!(
            "  tasks: {} completed, {} cancelled, {} failed, {} pending, {} running",
            self.tasks.completed,
            self.tasks.cancelled,
            self.tasks.failed,
            self.tasks.pending,
            self.tasks.running
        );
        println!();
        println!("invoices");
        for (invoice, report) in &self.invoices {
            let reason = report.reason.as_deref().unwrap_or("-");
            println!(
                "  {invoice}: {} after {} retries ({reason})",
                report.state, report.retries
            );
        }
        println!();
        println!("recoveries by outcome and reason");
        for (decision, count) in &self.decisions_by_reason {
            println!("  {decision}: {count}");
        }
        println!();
        println!("decisions in the activity ledger");
        for (kind, count) in &self.decisions {
            println!("  {kind}: {count}");
        }
    }
}

/// Names a recovery's outcome and its reason, such as
/// `lost: hard decline: stolen_card is never retried (decline table)` or
/// `open: insufficient_funds`, with ids
/// left out so that equal decisions group together.
fn decision_key(recovery: &Recovery) -> String {
    let reason = recovery
        .close_reason
        .as_deref()
        .map(general_reason)
        .or_else(|| {
            recovery
                .last_decline
                .as_ref()
                .map(|d| d.reason().to_owned())
        })
        .unwrap_or_else(|| "no decline reason".to_owned());
    format!("{}: {reason}", recovery.status)
}

/// Drops the ids (words with an underscore and a digit, such as `sub_1Abc`)
/// from a close reason, and the `: no further retries` at its end.
fn general_reason(reason: &str) -> String {
    let reason = reason.split(": no further").next().unwrap_or(reason);
    let words: Vec<&str> = reason
        .split(' ')
        .filter(|word| !(word.contains('_') && word.chars().any(|c| c.is_ascii_digit())))
        .collect();
    words.join(" ")
}

async fn merchant_figures(store: &PgStore, merchant: MerchantId) -> anyhow::Result<Figures> {
    let mut figures = Figures::default();
    for day in store.daily_metrics(Some(merchant)).await? {
        let currency = day.currency.to_string();
        figures.failed_payments += day.failed_payments;
        figures.retries_attempted += day.retries_attempted;
        figures.recovered_count += day.payments_recovered;
        figures.lost_count += day.payments_lost;
        *figures
            .recovered_amount
            .entry(currency.clone())
            .or_default() += day.amount_recovered;
        *figures.lost_amount.entry(currency).or_default() += day.amount_lost;
    }
    Ok(figures)
}

async fn merchant_tasks(store: &PgStore, merchant: MerchantId) -> anyhow::Result<TaskCounts> {
    let filter = TaskFilter {
        merchant_id: Some(merchant),
        limit: Some(1000),
        ..TaskFilter::default()
    };
    let mut counts = TaskCounts::default();
    for task in store.list_tasks(&filter).await? {
        use citadel::core::task::TaskStatus::*;
        match task.status {
            Pending => counts.pending += 1,
            Running => counts.running += 1,
            Completed => counts.completed += 1,
            Failed => counts.failed += 1,
            Cancelled => counts.cancelled += 1,
        }
    }
    Ok(counts)
}

fn add_figures(total: &mut Figures, figures: &Figures) {
    total.failed_payments += figures.failed_payments;
    total.retries_attempted += figures.retries_attempted;
    total.recovered_count += figures.recovered_count;
    total.lost_count += figures.lost_count;
    for (currency, amount) in &figures.recovered_amount {
        *total.recovered_amount.entry(currency.clone()).or_default() += amount;
    }
    for (currency, amount) in &figures.lost_amount {
        *total.lost_amount.entry(currency.clone()).or_default() += amount;
    }
}

fn print_figures(figures: &Figures) {
    println!(
        "  failed payments: {}, retries: {}, recovered: {} ({}), lost: {} ({})",
        figures.failed_payments,
        figures.retries_attempted,
        figures.recovered_count,
        format_amounts(&figures.recovered_amount),
        figures.lost_count,
        format_amounts(&figures.lost_amount)
    );
}

/// Formats amounts as `2500 usd + 1200 eur`, in minor units, leaving out
/// zeros.
fn format_amounts(amounts: &Amounts) -> String {
    let parts: Vec<String> = amounts
        .iter()
        .filter(|(_, amount)| **amount != 0)
        .map(|(currency, amount)| format!("{amount} {currency}"))
        .collect();
    if parts.is_empty() {
        "0".to_owned()
    } else {
        parts.join(" + ")
    }
}
