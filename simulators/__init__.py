"""linli simulators package."""
