-- Idempotency keys belong to the token that sent them (a replay must never answer another
-- caller), and old keys are purged by age.
DROP TABLE idempotency_keys;
CREATE TABLE idempotency_keys (
    token_id     TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER,          -- NULL while the first request is still being answered
    response     TEXT,             -- JSON {body, headers, content_type}
    created_at   TEXT NOT NULL,
    PRIMARY KEY (token_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
