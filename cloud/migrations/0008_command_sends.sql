-- Commands on their way (issue 18): when the sender last published each one to its gateway, how
-- often, and the incident a command answers (an SOS button's acknowledge), whose audit trail
-- follows the command's states. docs/commands.md.
ALTER TABLE commands
    ADD COLUMN sent_at     timestamptz,
    ADD COLUMN sends       integer NOT NULL DEFAULT 0,
    ADD COLUMN incident_id bigint REFERENCES incidents (incident_id);
-- The sender's look-ups: queued commands by the time it last sent them.
CREATE INDEX commands_resend_idx ON commands (sent_at NULLS FIRST, seq) WHERE state = 'queued';
