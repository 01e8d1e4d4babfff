-- The HTTP API (issue 13): how staff and integrators prove who they are, and who read what.
-- docs/api.md describes every table. Who a staff member is (roles, communities) stays in the
-- people file ([incidents] people); these tables hold only credentials and traces.

-- A staff member's password (argon2id). The login is the staff id of the people file.
CREATE TABLE api_users (
    staff_id            text        PRIMARY KEY,
    password_hash       text        NOT NULL,
    disabled            boolean     NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);

-- Refresh tokens (SHA-256 of the token): each is used once and replaced by a new one.
CREATE TABLE api_refresh_tokens (
    token_hash bytea       PRIMARY KEY,
    staff_id   text        NOT NULL REFERENCES api_users (staff_id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX api_refresh_tokens_staff_idx ON api_refresh_tokens (staff_id);

-- Integrators' API keys: `lk_<key_id>_<secret>`, shown once; only the secret's SHA-256 is kept.
CREATE TABLE api_keys (
    key_id       text        PRIMARY KEY,
    secret_hash  bytea       NOT NULL,
    name         text        NOT NULL,
    communities  text[]      NOT NULL,   -- community ids, or {'*'} for all
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- Login attempts, for the rate limit per account and per address.
CREATE TABLE api_login_attempts (
    at      timestamptz NOT NULL DEFAULT now(),
    login   text        NOT NULL,
    address text        NOT NULL,
    ok      boolean     NOT NULL
);
CREATE INDEX api_login_attempts_login_idx ON api_login_attempts (login, at);
CREATE INDEX api_login_attempts_address_idx ON api_login_attempts (address, at);

-- Every unmasked read of personal data (PIPL): who, what, when, from where. Append-only.
CREATE TABLE api_pii_audit (
    audit_id  bigserial   PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    principal text        NOT NULL,
    role      text        NOT NULL,
    resource  text        NOT NULL,   -- device, incident, ...
    subject   text        NOT NULL,   -- its id
    fields    text[]      NOT NULL,   -- the personal fields shown unmasked
    address   text        NOT NULL
);
CREATE INDEX api_pii_audit_at_idx ON api_pii_audit (at);
CREATE FUNCTION api_pii_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'api_pii_audit is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER api_pii_audit_append_only BEFORE UPDATE OR DELETE ON api_pii_audit
    FOR EACH ROW EXECUTE FUNCTION api_pii_audit_append_only();
