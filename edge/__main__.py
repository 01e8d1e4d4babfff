"""``python -m edge run --config edge.toml``: the same as ``linli edge ...``."""

from edge.cli import main

raise SystemExit(main())
