-- Events noted on an open incident (a rule's `note_events`: the resident cancelling an SOS press,
-- docs/alerts.md): an occurrence of kind `noted`, written by the alert service in its transaction,
-- which the incidents service tells everyone already told, once (`told_at`, set in the
-- transaction that queues those notifications: the occurrence is the outbox).
ALTER TABLE incident_occurrences DROP CONSTRAINT incident_occurrences_kind_check;
ALTER TABLE incident_occurrences ADD CONSTRAINT incident_occurrences_kind_check
    CHECK (kind IN ('fired', 'cleared', 'repeated', 'noted'));
ALTER TABLE incident_occurrences ADD COLUMN told_at timestamptz;
CREATE INDEX incident_occurrences_untold_idx ON incident_occurrences (occurrence_id)
    WHERE kind = 'noted' AND told_at IS NULL;
