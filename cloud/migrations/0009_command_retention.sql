-- Retention of finished commands ([retention] commands_days, docs/commands.md): streetlight
-- schedules alone queue thousands of commands a night per community. The audit trail stays
-- append-only for everyone but the retention job, which deletes a finished command's trail with
-- the command (it sets linli.retention for its own transaction only).
CREATE OR REPLACE FUNCTION command_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('linli.retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'command_audit is append-only (% refused)', TG_OP;
END $$;
CREATE INDEX commands_finished_idx ON commands (updated_at) WHERE state IN ('confirmed', 'failed', 'expired');
