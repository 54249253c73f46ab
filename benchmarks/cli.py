"""The ``python -m benchmarks`` command: the suite run and its page, or a subcommand.

    python -m benchmarks [--quick] ...     # run the suite (benchmarks.harness), then write the page (benchmarks.report)
    python -m benchmarks scale ...         # benchmarks.scale
    python -m benchmarks report ...        # rewrite the page from an existing run (benchmarks.report)

The only module that imports the harness, the report and the scale run together;
none of those three imports this one.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "scale":
        from .scale import main as scale_main

        return scale_main(argv[1:])
    if argv and argv[0] == "report":
        from .report import main as report_main

        return report_main(argv[1:])
    return run(argv)


def run(argv: list) -> int:
    """Run the suite with the options in ``argv`` (see :func:`benchmarks.harness.parse_args`) and write its page."""
    from .harness import parse_args, run_suite
    from .report import write_report

    args = parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    df = run_suite(args)
    md = args.results_md or (args.out / "RESULTS.md")
    info = {
        "started": started,
        "wall_min": (time.perf_counter() - t0) / 60,
        "load_start": load0,
        "load_end": os.getloadavg(),
        "quick": args.quick,
        "task_set": args.task_set,
        "threads": args.threads,
        "seed": args.seed,
        "timeout": args.timeout,
        "argv": " ".join(argv),
        "data": str(args.data),
        "fork": args.fork,
    }
    (args.out / "run_info.json").write_text(json.dumps(info))
    write_report(df, args.out, md, run_info=info)
    print(f"[bench] wrote {args.out / 'results.csv'} and {md}")
    return 0
