-- The PostgreSQL schema of temppass, the same design as the SQLite one
-- (crates/temppass-store-sqlite/src/migrations/0001_initial.sql): read that
-- file's comments for the why; only PostgreSQL-specific choices are noted here.

-- Trials and the keys that find them (SPEC.md §2).
-- An identity column never hands out an id twice (a sequence never goes back,
-- even when a transaction that took a value rolls back), and media tokens
-- carry a `sid` derived from the id.
CREATE TABLE trials (
    id               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_provider TEXT    NOT NULL,
    mvpd             TEXT    NOT NULL,
    started_at_ms    BIGINT  NOT NULL,
    expires_at_ms    BIGINT  NOT NULL,
    used_resources   TEXT[]  NOT NULL DEFAULT '{}'
);

CREATE TABLE bindings (
    service_provider TEXT     NOT NULL,
    mvpd             TEXT     NOT NULL,
    key_kind         SMALLINT NOT NULL, -- 0 device id, 1 identity hash
    key              TEXT     NOT NULL,
    generation       BIGINT   NOT NULL,
    trial_id         BIGINT   NOT NULL,
    PRIMARY KEY (service_provider, mvpd, key_kind, key)
);

CREATE INDEX bindings_by_trial ON bindings (trial_id);

CREATE TABLE generations (
    service_provider TEXT     NOT NULL,
    mvpd             TEXT     NOT NULL,
    key_kind         SMALLINT NOT NULL,
    generation       BIGINT   NOT NULL,
    PRIMARY KEY (service_provider, mvpd, key_kind)
);

-- Dynamic client registration (SPEC.md §6). Secrets and tokens are kept as SHA-256 hashes.
CREATE TABLE applications (
    id                TEXT    PRIMARY KEY,
    name              TEXT    NOT NULL,
    service_providers TEXT[]  NOT NULL,
    scopes            TEXT[]  NOT NULL,
    created_at_ms     BIGINT  NOT NULL,
    revoked_at_ms     BIGINT
);

CREATE UNIQUE INDEX applications_active_name ON applications (name) WHERE revoked_at_ms IS NULL;

CREATE TABLE clients (
    client_id      TEXT    PRIMARY KEY,
    secret_hash    TEXT    NOT NULL,
    application_id TEXT    NOT NULL REFERENCES applications (id),
    redirect_uris  TEXT[]  NOT NULL,
    issued_at_ms   BIGINT  NOT NULL
);

CREATE TABLE access_tokens (
    token_hash     TEXT    PRIMARY KEY,
    id             TEXT    NOT NULL,
    client_id      TEXT    NOT NULL,
    application_id TEXT    NOT NULL REFERENCES applications (id),
    scopes         TEXT[]  NOT NULL,
    created_at_ms  BIGINT  NOT NULL,
    expires_at_ms  BIGINT  NOT NULL
);

CREATE INDEX access_tokens_by_expiry ON access_tokens (expires_at_ms);
CREATE INDEX access_tokens_by_client ON access_tokens (client_id);
CREATE INDEX clients_by_issue ON clients (issued_at_ms);

-- Legacy reset API keys (SPEC.md §7), kept as SHA-256 hashes.
CREATE TABLE api_keys (
    key_hash         TEXT    PRIMARY KEY,
    service_provider TEXT    NOT NULL,
    created_at_ms    BIGINT  NOT NULL,
    revoked_at_ms    BIGINT
);

-- Second-screen sessions (SPEC.md §3), found by their short code.
CREATE TABLE sessions (
    code             TEXT    PRIMARY KEY,
    service_provider TEXT    NOT NULL,
    device           TEXT,
    mvpd             TEXT,
    domain_name      TEXT,
    redirect_url     TEXT,
    created_at_ms    BIGINT  NOT NULL,
    expires_at_ms    BIGINT  NOT NULL
);

CREATE INDEX sessions_by_expiry ON sessions (expires_at_ms);

-- Media token signing keys (SPEC.md §8), shared by every server on this
-- database: that is how a token from one server verifies on all of them.
CREATE TABLE signing_keys (
    kid           TEXT    PRIMARY KEY,
    seed          BYTEA   NOT NULL CHECK (length(seed) = 32),
    created_at_ms BIGINT  NOT NULL
);
