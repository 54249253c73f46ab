"""``python -m benchmarks [--quick] ...`` / ``python -m benchmarks scale ...`` / ``python -m benchmarks report ...``."""
from .harness import main

raise SystemExit(main())
