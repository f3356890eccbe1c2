"""The ``meshforge`` command.

    meshforge run CAPTURE [--model fusion[,other]] [--out DIR] [--options JSON] [--no-score] [--holdout]
    meshforge inspect CAPTURE
    meshforge models [--json]
    meshforge render-capture MESH OUT.zip [--style contract|sample] [--heldout N] [--ground-truth PATH]
    meshforge demo [DIR]
    meshforge errors [--markdown]
    meshforge serve ...            (from the meshforge-service package, when installed)

Exit status: 0 on success, 1 when a model failed (details in report.json), 2 for a bad
request or capture (the error code and message are printed), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .errors import MeshforgeError, catalogue


class ProgressBar:
    """A one-line progress bar on stderr (redrawn at most 10 times a second)."""

    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream, self.width = stream, width
        self.last = 0.0
        self.tty = stream.isatty()
        self._lock = threading.Lock()
        self._last_stage = None

    def __call__(self, event) -> None:
        with self._lock:
            now = time.monotonic()
            if not self.tty:
                if event.stage != self._last_stage:  # logs: one line per stage
                    self._last_stage = event.stage
                    print(f"[{event.fraction:4.0%}] {event.stage}", file=self.stream, flush=True)
                return
            if now - self.last < 0.1 and event.fraction < 1.0:
                return
            self.last = now
            filled = int(self.width * event.fraction)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r[{bar}] {event.fraction:4.0%} {event.stage[:60]:<60}")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fail(exc: MeshforgeError) -> int:
    print(f"error {exc.code}: {exc.message}", file=sys.stderr)
    if exc.details:
        shown = {k: v for k, v in exc.to_dict()["details"].items() if k != "consistency"}
        if shown:
            print(f"details: {json.dumps(shown)}", file=sys.stderr)
    return 2


def _options(text: str | None) -> dict:
    from .errors import InvalidOptions

    if not text:
        return {}
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidOptions(where="--options", reason=f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    return value


def _run_with_progress(fn, quiet: bool):
    """Call ``fn(progress)`` with a progress bar and Ctrl-C turned into cooperative cancellation."""
    from .progress import CancelFlag, Progress

    flag = CancelFlag()
    bar = None if quiet else ProgressBar()
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):
        if flag():
            raise KeyboardInterrupt
        flag.set()
        print("\ncancelling (Ctrl-C again to stop at once)...", file=sys.stderr)

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        return fn(Progress(bar, flag))
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar:
            bar.close()


def cmd_run(args) -> int:
    from .pipeline import run

    report = _run_with_progress(lambda p: run(args.capture, args.model, args.out, _options(args.options),
                                              score=not args.no_score, holdout=args.holdout, progress=p),
                                args.quiet)
    out = Path(args.out)
    for name, model in report["models"].items():
        q = model.get("quality") or {}
        verdict = f" quality {q['status']} (PSNR {q.get('psnr') or float('nan'):.2f} dB, SSIM " \
                  f"{q.get('ssim') or float('nan'):.3f})" if q else ""
        line = f"{name}: {model['status']}{verdict}"
        if model.get("error"):
            line += f" — {model['error']['code']}: {model['error']['message']}"
        print(line)
        if model["status"] in ("succeeded", "failed") and (out / name / "mesh.glb").exists():
            print(f"  {out / name / 'mesh.glb'}")
    print(f"report: {out / 'report.json'}")
    return {"succeeded": 0, "cancelled": 130}.get(report["status"], 1)


def cmd_inspect(args) -> int:
    from .capture import load_capture

    capture = load_capture(args.capture)
    summary = capture.summary()
    if not args.cameras:
        summary.pop("cameras")
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_models(args) -> int:
    from .manager import get_manager

    described = get_manager().describe()
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    rows = []
    for kind in ("reconstructors", "previewers", "quality_scorers"):
        for item in described[kind]:
            status = "yes" if item["available"] else f"no: {item.get('reason', '')}"
            rows.append((kind.rstrip("s").replace("_", " "), item["name"], item.get("version", "?"), status))
    if not rows:
        print("no components registered")
    width = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    for r in rows:
        print(f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]:<{width[2]}}  available: {r[3]}")
    failed = [p for p in described["plugins"] if p["status"] != "loaded"]
    for p in failed:
        print(f"plugin {p['name']} ({p['module']}): {p['status']}: {p['error']}")
    return 0


def cmd_render_capture(args) -> int:
    from .synthetic import render_capture

    result = render_capture(args.mesh, args.out, style=args.style, rgb_size=args.rgb_size,
                            depth_size=args.depth_size, fov_y_degrees=args.fov, distance=args.distance,
                            depth_encoding=args.depth_encoding, relative_offset=args.relative_offset,
                            heldout=args.heldout, heldout_dir=args.heldout_dir, ground_truth=args.ground_truth,
                            alpha=args.alpha)
    print(f"capture: {result.capture}")
    if result.heldout_dir:
        print(f"held-out views: {result.heldout_dir}")
    if result.ground_truth:
        print(f"ground truth: {result.ground_truth}")
    return 0


def cmd_demo(args) -> int:
    from .pipeline import run
    from .synthetic import demo_parts, render_capture

    out = Path(args.dir)
    print(f"rendering a demo capture of a procedural object into {out / 'demo-capture.zip'} ...", file=sys.stderr)
    render_capture(demo_parts(), out / "demo-capture.zip", heldout=8, heldout_dir=out / "demo-heldout",
                   ground_truth=out / "demo-ground-truth.glb")
    report = _run_with_progress(lambda p: run(out / "demo-capture.zip", None, out / "result", progress=p), args.quiet)
    for name, model in report["models"].items():
        q = model.get("quality") or {}
        print(f"{name}: {model['status']}" + (f", quality {q['status']} (PSNR {q['psnr']:.2f} dB, SSIM "
                                              f"{q['ssim']:.3f})" if q.get("psnr") is not None else ""))
        t = model.get("timings", {})
        if t:
            print(f"  reconstruction took {t.get('reconstruct_total', 0):.2f} s")
    print(f"mesh: {out / 'result' / 'fusion' / 'mesh.glb'}")
    print(f"report: {out / 'result' / 'report.json'}")
    return 0 if report["status"] == "succeeded" else 1


def cmd_errors(args) -> int:
    rows = catalogue()
    if args.markdown:
        print("| code | HTTP | when |")
        print("|---|---|---|")
        for r in rows:
            print(f"| `{r['code']}` | {r['http_status']} | {r['when']} |")
    else:
        print(json.dumps(rows, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="meshforge", description="Turn a six-view capture into a textured 3D mesh.")
    p.add_argument("--version", action="version", version=f"meshforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="reconstruct a capture (ZIP or directory) with one or more models")
    r.add_argument("capture")
    r.add_argument("--model", "--models", dest="model", default=None,
                   help="comma-separated reconstructors (default: fusion)")
    r.add_argument("--out", default="out", help="output folder (default: out)")
    r.add_argument("--options", help='JSON {model: {option: value}}, or @file.json')
    r.add_argument("--no-score", action="store_true", help="skip quality scoring")
    r.add_argument("--holdout", action="store_true", help="also score leave-one-view-out reconstructions")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("inspect", help="load and calibrate a capture, print what was found")
    i.add_argument("capture")
    i.add_argument("--cameras", action="store_true", help="include the cameras")
    i.set_defaults(func=cmd_inspect)

    m = sub.add_parser("models", help="list discovered plugins and whether they can run here")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    rc = sub.add_parser("render-capture", help="render a contract-compliant capture of a textured mesh")
    rc.add_argument("mesh")
    rc.add_argument("out", help="the capture ZIP to write")
    rc.add_argument("--style", choices=("contract", "sample"), default="contract",
                    help="contract: 16-bit metric depth + cameras.json; sample: 8-bit relative depth, no cameras")
    rc.add_argument("--rgb-size", type=int, default=2048)
    rc.add_argument("--depth-size", type=int, default=1024)
    rc.add_argument("--fov", type=float, default=40.0)
    rc.add_argument("--distance", type=float, default=2.5)
    rc.add_argument("--depth-encoding", choices=("linear16", "linear8", "inverse16", "relative8", "relative16"))
    rc.add_argument("--relative-offset", type=float, default=0.0,
                    help="relative depth proportional to z − offset·z_min (0: proportional)")
    rc.add_argument("--heldout", type=int, default=0, help="number of held-out orbit views")
    rc.add_argument("--heldout-dir", help="where to write them (default: OUT-heldout/)")
    rc.add_argument("--ground-truth", help="write the normalised mesh here (GLB)")
    rc.add_argument("--alpha", action="store_true", help="RGBA views with the object mask in alpha")
    rc.set_defaults(func=cmd_render_capture)

    d = sub.add_parser("demo", help="render a procedural capture and reconstruct it (no data needed)")
    d.add_argument("dir", nargs="?", default="meshforge-demo")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("errors", help="print every error code with its HTTP status")
    e.add_argument("--markdown", action="store_true")
    e.set_defaults(func=cmd_errors)

    _add_plugin_commands(sub)
    return p


def _add_plugin_commands(sub) -> None:
    """Commands from other distributions (e.g. ``serve`` from meshforge-service), by entry point."""
    from importlib import metadata

    for ep in metadata.entry_points(group="meshforge.commands"):
        try:
            ep.load()(sub)
        except Exception as exc:  # a broken add-on must not break the CLI
            print(f"meshforge: command plugin {ep.name!r} failed to load: {exc!r}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MeshforgeError as exc:
        return _fail(exc)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
