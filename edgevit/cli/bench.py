"""``edgevit bench`` and ``edgevit devices``: latency on the host or a phone, and the device profiles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import RunFailure
from .console import out, progress

BENCH_EXAMPLES = """
Examples:

  edgevit bench artifacts/*.pte artifacts/*.tflite artifacts/*.onnx --json bench.json --plot bench.png

  edgevit bench lvt.pte --threads 1 --runs 200 --rounds 3

  edgevit bench lvt.pte lvt.tflite --device android --json phone.json

  edgevit bench lvt.pte --compare bench.json
"""


def bench(
    artifacts: Annotated[list[Path], typer.Argument(help=".pte, .tflite, .onnx or .mlpackage files.")],
    device: Annotated[str, typer.Option(help="Device profile name or YAML (see `edgevit devices`).")] = "host",
    threads: Annotated[
        int | None, typer.Option(min=1, max=256, help="Threads per runtime; default: the profile's, else 2.")
    ] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Discarded runs before timing (XNNPACK packs weights).")] = 10,
    runs: Annotated[int, typer.Option(min=1, help="Timed runs, at least.")] = 50,
    min_seconds: Annotated[float, typer.Option(min=0, help="Keep timing until this much time has passed.")] = 1.0,
    rounds: Annotated[
        int, typer.Option(min=1, help="Host: fresh processes per artifact, alternating between artifacts.")
    ] = 1,
    op_profiling: Annotated[
        bool,
        typer.Option(
            help="Per-op tables: for a .pte on the host, time per XNNPACK op type (ExecuTorch's ETDump, traced "
            "runs apart from the timed ones); for a .tflite on Android, benchmark_model's tables."
        ),
    ] = False,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the records (raw samples) here.")] = None,
    plot_file: Annotated[Path | None, typer.Option("--plot", help="Write a PNG box plot of the samples here.")] = None,
    compare: Annotated[Path | None, typer.Option(help="An earlier --json file: show median ratios against it.")] = None,
) -> None:
    """Time artifacts on the host or a phone: one table, JSON records and a plot.

    Only the inference is timed, after discarded warm-up runs.
    Columns: n, median, p90, mean, trimmed mean (middle 80%), std, min, load ms, the model's MB, and the ratio
    to the reference (the first artifact that ran in full, named in the title).
    On the host each artifact runs in a fresh process; --rounds alternates several, and 'paired' is then the
    median of the per-round ratios to the reference (robust to a machine that changes speed).
    """
    from ..bench.devices import get_profile
    from ..bench.host import Settings
    from ..bench.record import read_records, write_records
    from ..bench.report import compare_table, hardware_notes, op_profile_table, plot, results_table, state_notes
    from ..bench.run import bench as run_bench
    from ..bench.run import check_artifacts
    from ..fileio import check_output_file

    profile = get_profile(device)
    settings = Settings(threads or profile.threads or 2, warmup, runs, min_seconds, rounds)
    for target, flag in ((json_file, "--json"), (plot_file, "--plot")):
        if target is not None:
            check_output_file(target, flag)
    check_artifacts(artifacts)
    old = read_records(compare) if compare else None  # a bad file fails before minutes of timing
    with progress() as show:
        records = run_bench(artifacts, profile, settings, show, op_profiling=op_profiling)
    out.print(results_table(records))
    for r in records:
        profile = r.get("op_profile")
        if profile and "ops" in profile:
            out.print(op_profile_table(r["artifact"]["name"], profile))
        elif profile and "error" in profile:
            out.print(f"[yellow]{r['artifact']['name']}: no op profile: {profile['error']}[/]", highlight=False)
    for r in records:
        for flag in r.get("flags", []):
            out.print(f"[yellow]{r['artifact']['name']}: {flag}[/]", highlight=False)
    for note in hardware_notes(records) + state_notes(records):
        out.print(f"[yellow]{note}[/]", highlight=False)
    if old is not None:
        table, matched = compare_table(old, records)
        out.print(table if matched else f"no record in {compare} matches these artifacts, devices and threads")
    if json_file:
        write_records(json_file, records)
        out.print(f"records: {json_file}", highlight=False)
    if plot_file:
        plot(records, plot_file)
        out.print(f"plot: {plot_file}", highlight=False)
    failed = [r for r in records if r["status"] in ("failed", "not run")]
    if all(r["status"] == "skipped" for r in records):
        first = records[0]
        some = f"all {len(records)} artifacts were skipped; first: " if len(records) > 1 else ""
        raise RunFailure(f"nothing was timed: {some}{first['artifact']['name']}: {first['reason']}")
    if failed:
        first = failed[0]
        raise RunFailure(
            f"{len(failed)} of {len(records)} benchmarks failed (results so far kept); "
            f"first: {first['artifact']['name']}: {first['error']}"
        )


devices_app = typer.Typer(
    help="Device profiles: list them (each one validated as it is read), or probe a connected Android phone.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@devices_app.callback()
def devices(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the device profiles (built in, and yours in the user folder); every profile is validated."""
    if ctx.invoked_subcommand is not None:
        return
    from ..bench.devices import all_profiles

    profiles = all_profiles()
    if as_json:
        print(json.dumps([p.to_dict() | {"source": p.source} for p in profiles.values()], indent=2))
        return
    table = Table("device", "kind", "serial", "abi", "cores", "threads", "runners", "description")
    for p in profiles.values():
        table.add_row(
            p.name,
            p.kind,
            p.serial or ("only device" if p.kind == "android" else ""),
            p.abi or "",
            p.cpu_mask or "",
            str(p.threads or ""),
            ", ".join(p.runners),
            p.description,
        )
    out.print(table)


@devices_app.command()
def probe(
    serial: Annotated[str | None, typer.Argument(help="adb serial; default: the only device connected.")] = None,
    name: Annotated[str | None, typer.Option(help="Profile name; default: from the phone's model.")] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the profile YAML goes; default: your profiles folder ($EDGEVIT_HOME/devices, else "
            "$XDG_CONFIG_HOME/edgevit/devices, else ~/.config/edgevit/devices), where --device finds it by name."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing profile.")] = False,
) -> None:
    """Write a device profile from a connected phone's getprop and cpufreq data (big cores pinned)."""
    from ..bench.devices import probe as write_profile

    path, profile = write_profile(serial, name, output_dir, force)
    out.print(f"wrote {path}: {profile['description']}; big cores mask {profile['cpu_mask']}", highlight=False)
