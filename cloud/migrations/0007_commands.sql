-- Commands down to devices (issue 18): the outbox and its audit trail. docs/commands.md.

-- One command to one device. Written by the API (or a rule action) in state `queued`: the table is
-- the outbox the sender reads, per gateway in `seq` order. `command_id` is the idempotency key,
-- end to end (a retried request, a resent MQTT message, a replayed edge queue: the same command).
CREATE TABLE commands (
    command_id   uuid        PRIMARY KEY,
    seq          bigserial   NOT NULL UNIQUE,
    device_id    text        NOT NULL,
    community_id text        NOT NULL,
    gateway_id   text        NOT NULL,
    name         text        NOT NULL,
    params       jsonb       NOT NULL,
    confirm      text        NOT NULL CHECK (confirm IN ('report', 'network', 'none')),
    state        text        NOT NULL CHECK (state IN
                     ('queued', 'at_gateway', 'sent_to_device', 'confirmed', 'failed', 'expired')),
    reason       text,
    requested_by text        NOT NULL,
    requested_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX commands_outbox_idx ON commands (gateway_id, seq) WHERE state = 'queued';
CREATE INDEX commands_device_idx ON commands (device_id, requested_at DESC);

-- Every change of a command's state, who or what made it, and why: append-only.
CREATE TABLE command_audit (
    id         bigserial   PRIMARY KEY,
    command_id uuid        NOT NULL REFERENCES commands (command_id),
    at         timestamptz NOT NULL,
    actor      text        NOT NULL,
    state      text        NOT NULL,
    detail     text        NOT NULL DEFAULT ''
);
CREATE INDEX command_audit_command_idx ON command_audit (command_id, id);
CREATE FUNCTION command_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'command_audit is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER command_audit_append_only BEFORE UPDATE OR DELETE ON command_audit
    FOR EACH ROW EXECUTE FUNCTION command_audit_append_only();
