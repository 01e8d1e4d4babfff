"""The HTTP API (``linli cloud api``): sensor history, devices and incidents for the people
allowed to see them. docs/api.md describes it; `cloud.api.app.create_app` builds it."""
