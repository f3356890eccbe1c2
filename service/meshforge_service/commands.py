"""``meshforge serve`` and ``meshforge worker``, added to the core CLI through the
``meshforge.commands`` entry point."""

from __future__ import annotations


def add_commands(sub) -> None:
    serve = sub.add_parser("serve", help="run the REST service: embedded Redis, one worker and the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", help="jobs and the embedded Redis (default MESHFORGE_DATA_DIR or ./meshforge-data)")
    serve.add_argument("--redis-url", help="use this Redis instead of starting one (default MESHFORGE_REDIS_URL)")
    serve.add_argument("--gpus", help="one worker per listed GPU, e.g. 0,1 (default MESHFORGE_GPUS; none: one CPU worker)")
    serve.set_defaults(func=lambda a: _serve(a))

    worker = sub.add_parser("worker", help="run worker process(es) against MESHFORGE_REDIS_URL")
    worker.add_argument("--gpus", help="one worker per listed GPU (default MESHFORGE_GPUS; none: one CPU worker)")
    worker.set_defaults(func=lambda a: _worker(a))


def _serve(args) -> int:
    from .embedded import serve

    return serve(args.host, args.port, args.data_dir, args.redis_url, args.gpus)


def _worker(args) -> int:
    from .workerd import main

    return main(["--gpus", args.gpus] if args.gpus else [])
