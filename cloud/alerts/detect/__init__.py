"""Proactive detection: each device's and resident's normal learned from stored history (numpy,
vectorised over a community's devices), and early, explained incidents when it is broken."""
