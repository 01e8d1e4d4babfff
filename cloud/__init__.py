"""linli cloud package."""
