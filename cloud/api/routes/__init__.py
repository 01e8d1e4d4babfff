"""One router per resource, each mounted under ``/api/v1`` by `cloud.api.app.create_app`."""
