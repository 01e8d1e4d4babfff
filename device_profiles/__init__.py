"""The unified data standard: canonical readings and declarative per-vendor device profiles."""
