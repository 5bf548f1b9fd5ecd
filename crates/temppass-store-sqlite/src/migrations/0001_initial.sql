-- Trials and the keys that find them (SPEC.md §2).
-- A trial is found through a binding: (service provider, mvpd, key kind, key) -> trial.
-- A binding counts only while its generation equals the current generation of
-- its (service provider, mvpd, key kind): bumping that number is the O(1) "reset all".
-- AUTOINCREMENT: a trial id is never reused, even after a reset or a merge
-- deleted the newest trial, because media tokens carry a `sid` derived from it.
CREATE TABLE trials (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    service_provider TEXT    NOT NULL,
    mvpd             TEXT    NOT NULL,
    started_at_ms    INTEGER NOT NULL,
    expires_at_ms    INTEGER NOT NULL,
    used_resources   TEXT    NOT NULL DEFAULT '[]'
);

CREATE TABLE bindings (
    service_provider TEXT    NOT NULL,
    mvpd             TEXT    NOT NULL,
    key_kind         INTEGER NOT NULL, -- 0 device id, 1 identity hash
    key              TEXT    NOT NULL,
    generation       INTEGER NOT NULL,
    trial_id         INTEGER NOT NULL,
    PRIMARY KEY (service_provider, mvpd, key_kind, key)
) WITHOUT ROWID;

CREATE INDEX bindings_by_trial ON bindings (trial_id);

CREATE TABLE generations (
    service_provider TEXT    NOT NULL,
    mvpd             TEXT    NOT NULL,
    key_kind         INTEGER NOT NULL,
    generation       INTEGER NOT NULL,
    PRIMARY KEY (service_provider, mvpd, key_kind)
) WITHOUT ROWID;

-- Dynamic client registration (SPEC.md §6). Secrets and tokens are kept as SHA-256 hashes.
CREATE TABLE applications (
    id                TEXT    PRIMARY KEY,
    name              TEXT    NOT NULL,
    service_providers TEXT    NOT NULL,
    scopes            TEXT    NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    revoked_at_ms     INTEGER
);

CREATE UNIQUE INDEX applications_active_name ON applications (name) WHERE revoked_at_ms IS NULL;

CREATE TABLE clients (
    client_id      TEXT    PRIMARY KEY,
    secret_hash    TEXT    NOT NULL,
    application_id TEXT    NOT NULL REFERENCES applications (id),
    redirect_uris  TEXT    NOT NULL,
    issued_at_ms   INTEGER NOT NULL
);

CREATE TABLE access_tokens (
    token_hash     TEXT    PRIMARY KEY,
    id             TEXT    NOT NULL,
    client_id      TEXT    NOT NULL,
    application_id TEXT    NOT NULL REFERENCES applications (id),
    scopes         TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);

CREATE INDEX access_tokens_by_expiry ON access_tokens (expires_at_ms);
CREATE INDEX access_tokens_by_client ON access_tokens (client_id);
CREATE INDEX clients_by_issue ON clients (issued_at_ms);

-- Legacy reset API keys (SPEC.md §7), kept as SHA-256 hashes.
CREATE TABLE api_keys (
    key_hash         TEXT    PRIMARY KEY,
    service_provider TEXT    NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    revoked_at_ms    INTEGER
);

-- Second-screen sessions (SPEC.md §3), found by their short code.
CREATE TABLE sessions (
    code             TEXT    PRIMARY KEY,
    service_provider TEXT    NOT NULL,
    device           TEXT,
    mvpd             TEXT,
    domain_name      TEXT,
    redirect_url     TEXT,
    created_at_ms    INTEGER NOT NULL,
    expires_at_ms    INTEGER NOT NULL
);

CREATE INDEX sessions_by_expiry ON sessions (expires_at_ms);

-- Media token signing keys (SPEC.md §8): created once, never regenerated.
CREATE TABLE signing_keys (
    kid           TEXT    PRIMARY KEY,
    seed          BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL
);
