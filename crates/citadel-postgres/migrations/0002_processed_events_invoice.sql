-- The invoice each recorded event is about, so the intake of a late
-- invoice.payment_failed can find a settlement (invoice.paid, invoice.voided,
-- ...) that Stripe delivered before it.
ALTER TABLE processed_events ADD COLUMN invoice_id text;

CREATE INDEX processed_events_invoice
    ON processed_events (account_id, invoice_id)
    WHERE invoice_id IS NOT NULL;
