"""A Python process that imports a tool's packages once and forks one worker per call.

    python -m benchmarks.zygote [MODULE ...]

Started by the harness (one per Python tool, with the call's thread settings in its
environment). It imports the modules named on the command line, then answers
requests on stdin, one JSON line each: ``{"argv": [...], "log": PATH}`` or
``{"exec": [...], "log": PATH}``. For each it forks a child that starts a new
session, sends its stdout and stderr to ``log`` and runs
``benchmarks.worker.main(argv)`` (or replaces itself with the ``exec`` command); it
writes ``{"pid": PID}`` at once and ``{"pid": PID, "rc": RC, "maxrss_kb": KB}`` when
the child has ended (``wait4``), each as one line on its stdout.

The worker's output is the same as when it runs as ``python -m benchmarks.worker``;
what the fork saves is the interpreter start and the package imports (about 4 s per
call for torch + pybridge on 2 cores). A zygote with no modules is a small launcher
for the R tools: a child's peak RSS (``ru_maxrss``) starts at the RSS of the process
it was forked from and survives ``exec``, so R started straight from the harness
would report at least the harness's own memory.

The parent never runs a tool itself, so no thread pool or CUDA context exists
before the fork. Top-level imports are light on purpose: this module also runs in
the separate scvi-tools environment.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback


def _child(req: dict) -> None:
    code = 1
    try:
        os.setsid()  # own process group: the harness kills the whole group on timeout
        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
        if "exec" in req:
            os.execvp(req["exec"][0], req["exec"])
        from benchmarks.worker import main as worker_main

        code = worker_main(req["argv"])
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:  # noqa: BLE001 - the worker records its own errors; this is the last resort
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def main(argv=None) -> int:
    modules = list(sys.argv[1:] if argv is None else argv)
    # answers go to a private copy of stdout; anything the imports print goes to stderr
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for name in modules:
        importlib.import_module(name)
    reply.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            reply.close()
            _child(req)
        reply.write(json.dumps({"pid": pid}) + "\n")
        _, status, usage = os.wait4(pid, 0)
        reply.write(
            json.dumps({"pid": pid, "rc": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
