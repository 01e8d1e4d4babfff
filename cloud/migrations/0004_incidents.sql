-- The incident workflow, the escalation ladder and the notification outbox (issue 12).
-- docs/incidents.md describes the states and docs/notify.md the outbox.

-- Where each incident is in the workflow. `state` already exists ('detected'); `closed_at` is set
-- when it leaves the open set (closed, or rejected as a false alarm), which frees the alert
-- engine's one-open-incident-per-(rule, subject) key.
ALTER TABLE incidents
    ADD COLUMN handler            text,          -- staff id the incident is dispatched to
    ADD COLUMN accepted_at        timestamptz,
    ADD COLUMN accepted_by        text,
    ADD COLUMN dispatched_at      timestamptz,
    ADD COLUMN handled_at         timestamptz,
    ADD COLUMN verified_at        timestamptz,
    ADD COLUMN rejected_at        timestamptz,
    ADD COLUMN reject_reason      text,
    ADD COLUMN assessed_at        timestamptz,
    ADD COLUMN sla                jsonb,         -- figures computed at `assess` (docs/incidents.md)
    ADD COLUMN rated_at           timestamptz,
    ADD COLUMN rating             smallint CHECK (rating BETWEEN 1 AND 5),
    ADD COLUMN rating_comment     text,
    ADD COLUMN escalation_level   smallint    NOT NULL DEFAULT 0,  -- 0: nobody notified yet
    ADD COLUMN next_escalation_at timestamptz,   -- the next step of the ladder (NULL: none due)
    ADD COLUMN version            integer     NOT NULL DEFAULT 0;  -- bumped by every transition
ALTER TABLE incidents ADD CONSTRAINT incidents_state_check CHECK (state IN (
    'detected', 'accepted', 'dispatched', 'handled', 'verified', 'closed', 'assessed', 'rated',
    'rejected'));
-- New incidents wait for their first step (escalation_level 0); the escalator finds them here.
CREATE INDEX incidents_escalation_idx ON incidents (next_escalation_at)
    WHERE state = 'detected';
CREATE INDEX incidents_unstepped_idx ON incidents (incident_id)
    WHERE state = 'detected' AND escalation_level = 0;

-- Every change of an incident: who, when, from, to, why. Append-only (the trigger refuses
-- UPDATE and DELETE).
CREATE TABLE incident_audit (
    audit_id    bigserial   PRIMARY KEY,
    incident_id bigint      NOT NULL REFERENCES incidents (incident_id),
    at          timestamptz NOT NULL,
    actor       text        NOT NULL,   -- staff id, or 'system' (escalation, auto-close)
    actor_role  text        NOT NULL,
    action      text        NOT NULL,   -- accept, dispatch, ..., escalate, remind, auto_close
    from_state  text        NOT NULL,
    to_state    text        NOT NULL,
    note        text        NOT NULL DEFAULT '',
    detail      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX incident_audit_incident_idx ON incident_audit (incident_id, audit_id);
CREATE FUNCTION incident_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'incident_audit is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER incident_audit_append_only BEFORE UPDATE OR DELETE ON incident_audit
    FOR EACH ROW EXECUTE FUNCTION incident_audit_append_only();

-- Notifications owed, written in the transaction of the change that causes them; the sender
-- (`linli cloud notify`) delivers them and records the outcome on the same row.
CREATE TABLE notify_outbox (
    notification_id bigserial   PRIMARY KEY,   -- also the idempotency key sent with it
    incident_id     bigint      REFERENCES incidents (incident_id),  -- NULL for test messages
    created_at      timestamptz NOT NULL,
    reason          text        NOT NULL,      -- escalate, remind, family, doctor, dispatch, ...
    channel         text        NOT NULL,      -- a channel name of [notify.channels]
    severity        text        NOT NULL,
    recipients      jsonb       NOT NULL DEFAULT '[]',  -- [{"staff_id", "name", "mobile", "email"}]
    message         jsonb       NOT NULL,      -- what to say (cloud.notify.message.Message)
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN (
                        'pending', 'sending', 'sent', 'retrying', 'refused', 'given_up', 'digested')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    sent_at         timestamptz,
    last_code       text,                      -- the API's own code (errcode, code, SMTP reply)
    last_message    text,
    digest_id       bigint REFERENCES notify_outbox (notification_id)  -- the digest that carried it
);
CREATE INDEX notify_outbox_due_idx ON notify_outbox (next_attempt_at)
    WHERE state IN ('pending', 'retrying', 'sending');
CREATE INDEX notify_outbox_incident_idx ON notify_outbox (incident_id);
