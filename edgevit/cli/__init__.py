"""The ``edgevit`` command: a thin layer over the library's public functions.

Each command group lives in its own module (models, export, artifacts, bench, train) and writes through
``console``; this module wires them into one typer app, in the order ``--help`` lists them.
"""

from __future__ import annotations

import os
import signal
import sys

import typer

from ..errors import raise_stopped
from . import artifacts, bench, export, models, train
from .exit_codes import run_app
from .quiet import quiet_third_party

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Put small vision transformers on phones: export, verify and benchmark LVT and friends.",
    pretty_exceptions_enable=False,
)
app.command()(models.models)
app.command()(models.recipes)
app.command(epilog=export.EXPORT_EXAMPLES)(export.export)
app.command(epilog=bench.BENCH_EXAMPLES)(bench.bench)
app.add_typer(bench.devices_app, name="devices")
app.command(epilog=train.QAT_EXAMPLES)(train.qat)
app.add_typer(train.datasets_app, name="datasets")
app.command()(artifacts.verify)
app.command()(artifacts.inspect)


def run(argv: list[str] | None = None) -> int:
    """Run one command in this process and return its exit code; errors are one line on stderr."""
    return run_app(app, argv)


def main() -> None:
    """Console entry point: user errors print one line and exit non-zero; EDGEVIT_DEBUG=1 shows tracebacks."""
    if os.environ.get("EDGEVIT_DEBUG") != "1":
        quiet_third_party()
    # Ctrl-C and SIGTERM unwind as Stopped, so partial files are removed on the way out
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_stopped)
    sys.exit(run())
