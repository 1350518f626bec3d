-- The newest known state of each subscription, so that a
-- customer.subscription.updated delivered before the older .created keeps
-- the newer status, and a subscription canceled by an update stops the
-- retries of its invoices like customer.subscription.deleted does.
CREATE TABLE subscription_states (
    merchant_id bigint NOT NULL REFERENCES merchants (id),
    subscription_id text NOT NULL,
    -- Stripe's subscription status: active, past_due, canceled, ...
    status text NOT NULL,
    -- The creation time of the newest Stripe event applied.
    last_event_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, subscription_id)
);

-- Time to recovery: the seconds from a recovery's opening to its payment,
-- summed over the recoveries counted in payments_recovered, so the mean is
-- recovery_seconds / payments_recovered.
ALTER TABLE daily_metrics
    ADD COLUMN recovery_seconds bigint NOT NULL DEFAULT 0;

-- 'stopped': Stripe answered a retry that the invoice is already paid, void,
-- uncollectible or deleted. The recovery ends without counting as recovered
-- or lost by Citadel.
ALTER TABLE invoice_recoveries DROP CONSTRAINT invoice_recoveries_status_check;
ALTER TABLE invoice_recoveries ADD CONSTRAINT invoice_recoveries_status_check
    CHECK (status IN ('awaiting_invoice', 'open', 'recovered', 'lost', 'stopped'));
