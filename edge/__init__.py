"""linli edge package."""
