"""``python -m benchmarks [--quick] ...`` / ``python -m benchmarks scale ...`` / ``python -m benchmarks report ...``."""

from .cli import main

raise SystemExit(main())
