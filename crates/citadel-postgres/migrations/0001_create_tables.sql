-- Citadel's schema: merchants, the task queue, the activity ledger, the
-- processed Stripe events, daily metrics and one recovery per failed invoice.
-- Money columns are bigint counts of the currency's minor units, as Stripe
-- sends them.

CREATE TABLE merchants (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    -- The Stripe connected account (acct_...); NULL is the platform's own
    -- account.
    account_id text,
    status text NOT NULL DEFAULT 'active',
    policy jsonb NOT NULL,
    time_zone text NOT NULL DEFAULT 'UTC',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT merchants_account_id_key UNIQUE (account_id),
    CONSTRAINT merchants_status_check CHECK (status IN ('active', 'paused'))
);

-- A unique constraint lets any number of NULLs through, so this index allows
-- at most one merchant for the platform's own account.
CREATE UNIQUE INDEX merchants_platform_account_key
    ON merchants ((account_id IS NULL))
    WHERE account_id IS NULL;

CREATE TABLE scheduled_tasks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES merchants (id),
    kind text NOT NULL,
    invoice_id text,
    payload jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'pending',
    run_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    last_error text,
    lease_owner text,
    lease_token uuid,
    lease_expires_at timestamptz,
    dedupe_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT scheduled_tasks_status_check
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT scheduled_tasks_attempts_check CHECK (attempts >= 0),
    -- A running task holds a whole lease, and a task in any other status
    -- holds none of it.
    CONSTRAINT scheduled_tasks_lease_check CHECK (
        (status = 'running')
        = (lease_owner IS NOT NULL AND lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
        AND (status = 'running' OR (lease_owner IS NULL AND lease_token IS NULL AND lease_expires_at IS NULL))
    )
);

-- At most one live (pending or running) task per merchant and dedupe key.
CREATE UNIQUE INDEX scheduled_tasks_live_dedupe_key
    ON scheduled_tasks (merchant_id, dedupe_key)
    WHERE status IN ('pending', 'running');

-- Serves the claim: due pending tasks in (run_at, id) order.
CREATE INDEX scheduled_tasks_pending_run_at
    ON scheduled_tasks (run_at, id)
    WHERE status = 'pending';

-- Serves cancelling the pending retries of an invoice.
CREATE INDEX scheduled_tasks_pending_invoice
    ON scheduled_tasks (merchant_id, invoice_id)
    WHERE status = 'pending';

-- Serves handing back tasks whose lease expired.
CREATE INDEX scheduled_tasks_running_lease
    ON scheduled_tasks (lease_expires_at)
    WHERE status = 'running';

-- Serves listing a merchant's tasks newest first, and the foreign key.
CREATE INDEX scheduled_tasks_merchant_id ON scheduled_tasks (merchant_id, id DESC);

-- The activity ledger. task_id has no foreign key, so that deleting a task
-- keeps its history.
CREATE TABLE usage_logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES merchants (id),
    kind text NOT NULL,
    task_id bigint,
    invoice_id text,
    event_id text,
    message text NOT NULL,
    details jsonb NOT NULL DEFAULT 'null',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX usage_logs_merchant_id ON usage_logs (merchant_id, id DESC);

-- One row per Stripe event applied; a redelivery conflicts on the primary
-- key. account_id is '' for the platform's own account, because a primary key
-- column cannot be NULL.
CREATE TABLE processed_events (
    event_id text NOT NULL,
    account_id text NOT NULL DEFAULT '',
    event_type text NOT NULL,
    -- When Stripe created the event.
    created_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload jsonb NOT NULL,
    PRIMARY KEY (event_id, account_id)
);

CREATE TABLE daily_metrics (
    merchant_id bigint NOT NULL REFERENCES merchants (id),
    day date NOT NULL,
    currency text NOT NULL,
    failed_payments bigint NOT NULL DEFAULT 0,
    retries_attempted bigint NOT NULL DEFAULT 0,
    payments_recovered bigint NOT NULL DEFAULT 0,
    amount_recovered bigint NOT NULL DEFAULT 0,
    payments_lost bigint NOT NULL DEFAULT 0,
    amount_lost bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, currency)
);

-- One recovery per failed invoice. amount_due and amount_recovered share the
-- currency column.
CREATE TABLE invoice_recoveries (
    merchant_id bigint NOT NULL REFERENCES merchants (id),
    invoice_id text NOT NULL,
    status text NOT NULL,
    customer_id text,
    subscription_id text,
    amount_due bigint,
    amount_recovered bigint,
    currency text,
    retries_made integer NOT NULL DEFAULT 0,
    last_decline jsonb,
    -- The creation time of the newest Stripe event applied.
    last_event_at timestamptz NOT NULL,
    close_reason text,
    opened_at timestamptz NOT NULL DEFAULT now(),
    closed_at timestamptz,
    PRIMARY KEY (merchant_id, invoice_id),
    CONSTRAINT invoice_recoveries_status_check
        CHECK (status IN ('awaiting_invoice', 'open', 'recovered', 'lost')),
    CONSTRAINT invoice_recoveries_currency_check
        CHECK (currency IS NOT NULL OR (amount_due IS NULL AND amount_recovered IS NULL))
);

-- Serves finding the recoveries of a deleted subscription that have not ended.
CREATE INDEX invoice_recoveries_open_subscription
    ON invoice_recoveries (merchant_id, subscription_id)
    WHERE status IN ('open', 'awaiting_invoice');

-- Each task row is updated several times, and events and ledger rows pile up
-- until they are pruned, so these tables are vacuumed once 5% (usage_logs 10%)
-- of their rows are dead instead of PostgreSQL's default 20%.
ALTER TABLE scheduled_tasks SET (autovacuum_vacuum_scale_factor = 0.05);
ALTER TABLE processed_events SET (autovacuum_vacuum_scale_factor = 0.05);
ALTER TABLE usage_logs SET (autovacuum_vacuum_scale_factor = 0.10);
