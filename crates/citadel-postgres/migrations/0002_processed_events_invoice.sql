-- The invoice and subscription each recorded event is about, so the intake
-- of a late invoice.payment_failed can find a settlement (invoice.paid,
-- invoice.voided, ...) or a customer.subscription.deleted that Stripe
-- delivered before it.
ALTER TABLE processed_events
    ADD COLUMN invoice_id text,
    ADD COLUMN subscription_id text;

CREATE INDEX processed_events_invoice
    ON processed_events (account_id, invoice_id)
    WHERE invoice_id IS NOT NULL;

CREATE INDEX processed_events_deleted_subscription
    ON processed_events (account_id, subscription_id)
    WHERE event_type = 'customer.subscription.deleted';
