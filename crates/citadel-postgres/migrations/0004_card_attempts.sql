-- Card network caps count payment attempts per card across all merchants,
-- keyed by Stripe's card fingerprint. The fingerprint of the card an
-- invoice's payments use is kept on its recovery once a decline names it.
ALTER TABLE invoice_recoveries ADD COLUMN card_fingerprint text;

-- One row per payment attempt on a card: a Citadel retry (keyed by its
-- idempotency key, so a rerun of the same retry counts once) or a failure
-- that a Stripe event reported (keyed by the event id).
CREATE TABLE card_attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint text NOT NULL,
    merchant_id bigint NOT NULL REFERENCES merchants (id),
    invoice_id text NOT NULL,
    attempt_key text NOT NULL,
    attempted_at timestamptz NOT NULL,
    CONSTRAINT card_attempts_attempt_key_key UNIQUE (attempt_key)
);

-- Serves counting one card's attempts within the cap's window.
CREATE INDEX card_attempts_fingerprint_attempted_at
    ON card_attempts (fingerprint, attempted_at);

-- Serves the foreign key when a merchant is deleted.
CREATE INDEX card_attempts_merchant_id ON card_attempts (merchant_id);
