"""`captioner demo`: the web demo of demo/app.py, started from the CLI.

The options are parsed here, so that `--help` and a bad option are answered without importing
gradio (seconds of imports); only a demo that starts loads demo/app.py, which parses them again
with the same `add_demo_arguments`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = ("Web demo: upload an image, get its caption and per-word attention maps. Serves on "
               "127.0.0.1 only unless --host says otherwise; no request leaves this machine unless --share.")
APP = Path(__file__).resolve().parents[2] / "demo" / "app.py"


def add_demo_parser(commands) -> None:
    parser = commands.add_parser("demo", help="web demo: caption uploads, show per-word attention",
                                 description=DESCRIPTION)
    add_demo_arguments(parser)
    parser.set_defaults(run=demo)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint",
                        help="a checkpoint written by train or export (default: the bundled shapes model)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 serves the local network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also create a temporary public link through Gradio's share servers (needs internet)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: half the cores, at least 1)")


def demo(args: argparse.Namespace) -> int:
    """Run demo/app.py of this source checkout with the parsed options."""
    import importlib.util  # noqa: PLC0415

    if not APP.is_file():
        print(f"error: the demo needs a source checkout of captioner ({APP} not found)", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("captioner_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module.main(app_argv(args))


def app_argv(args: argparse.Namespace) -> list[str]:
    """The parsed options as demo/app.py's command line (its `main` takes nothing else)."""
    argv = ["--host", args.host, "--port", str(args.port), "--device", args.device]
    if args.checkpoint is not None:
        argv += ["--checkpoint", args.checkpoint]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if args.share:
        argv.append("--share")
    return argv
