"""Commands down to devices, the cloud's side: the outbox every command starts in (docs/commands.md)."""
