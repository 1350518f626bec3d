-- API tokens of merchants for the operator API. Only the SHA-256 digest of
-- each token is stored: the token is 32 random bytes, so its digest cannot
-- be reversed or guessed, and a database leak reveals no usable token.
CREATE TABLE merchant_tokens (
    token_hash bytea PRIMARY KEY,
    merchant_id bigint NOT NULL REFERENCES merchants (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT merchant_tokens_hash_length_check CHECK (length(token_hash) = 32)
);

-- Serves the foreign key and finding a merchant's tokens.
CREATE INDEX merchant_tokens_merchant_id ON merchant_tokens (merchant_id);
