"""Where every command writes: results on stdout, errors and progress on stderr, and the shared summaries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

# tables are wide: a pipe or a log gets them whole instead of squeezed to 80 columns
out = Console(width=None if Console().is_terminal else 160)
err = Console(stderr=True)


@contextmanager
def progress() -> Iterator[Callable[[str], None]]:
    """A spinner, one description and the elapsed time on stderr, gone when done; yields the description setter.

    The line starts with the first description, so work that turns out to need none prints nothing."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if not err.is_terminal:  # a log gets no spinner, and no blank line where one stood
        yield lambda description: None
        return
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True)
    task = None

    def describe(description: str) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(description, total=None)
        else:
            bar.update(task, description=description)

    try:
        yield describe
    finally:
        if task is not None:
            bar.stop()


def print_summary(result) -> None:
    """A written artifact in four lines: path and size, audit, numerics, manifest (and any gate it missed)."""
    m = result.manifest
    lines = [
        f"[bold]{result.artifact}[/] ({m['artifact']['size_bytes'] / 1e6:.1f} MB, "
        f"exported in {m['artifact']['export_seconds']:.0f} s)",
        f"  audit: {describe_audit(m['audit'])}",
        f"  numerics: {describe_numerics(m['numerics'])}",
        f"  manifest: {result.manifest_path}",
    ]
    if m["gates"]["failures"]:
        lines.append("[yellow]  gates missed (kept by --allow-gate-failures):[/] " + "; ".join(m["gates"]["failures"]))
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)


def describe_audit(audit: dict) -> str:
    """One line of the audit figures that matter for the artifact's target."""
    parts = []
    if "ops" in audit and "delegated_share" not in audit:  # ExecuTorch's partition line gives its ops' share
        parts.append(f"{sum(audit['ops'].values())} {audit['backend']} ops")
    if audit.get("partitions") is not None:
        part = f"{audit['partitions']} {audit.get('delegate', audit['backend'])} partition(s)"
        if "delegated_share" in audit:
            part += f", {audit['delegated_share'] * 100:.1f}% of ops delegated"
        parts.append(f"{part}, {sum(audit['ops_outside'].values())} ops outside")
    if "all_builtin" in audit:
        parts.append("all builtin" if audit["all_builtin"] else f"non-builtin: {', '.join(audit['non_builtin_ops'])}")
    if "transposes" in audit:
        parts.append(f"{audit['transposes']} transposes")
    if "fp16_share" in audit:
        parts.append(f"fp16 share {audit['fp16_share'] * 100:.0f}%")
    if "max_rank" in audit:
        parts.append(f"max rank {audit['max_rank']}")
    return ", ".join(parts)


def describe_numerics(num: dict) -> str:
    """One line of the artifact-vs-PyTorch comparison, or why there is none."""
    if "skipped" in num and "simulated" in num:
        return f"{num['skipped']}; gated on {describe_numerics(num['simulated'])}"
    if "skipped" in num:
        return num["skipped"]
    return (
        f"vs PyTorch fp32 on {num['samples']} photos ({num['runtime']}): max abs diff {num['max_abs_diff']:.2e}, "
        f"SQNR {num['sqnr_db']:.1f} dB, top-1 agreement {num['top1_agreement'] * 100:.0f}%"
    )
