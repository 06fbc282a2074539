"""Tables and plots of benchmark records."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

from .record import key


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


# a record whose slowest round's median is this much above its fastest met a machine that changed speed
STATE_CHANGE = 1.3


def _round_medians(record: dict[str, Any]) -> list[float]:
    return [r["median_ms"] for r in record.get("rounds", [])]


def reference_index(records: list[dict[str, Any]]) -> int | None:
    """The record both ratios are against: the first that ran in full (not skipped, no failed round)."""
    return next((i for i, r in enumerate(records) if r["status"] == "ok" and r["stats"].get("median")), None)


def paired_ratios(records: list[dict[str, Any]]) -> list[float | None]:
    """Each record against the reference (:func:`reference_index`), round by round: the median of its round's
    median over the reference's in the same round. The processes of one round ran back to back, so a machine
    that changes speed between rounds moves both sides of each ratio alike. None for records timed once, and
    for all when the reference was."""
    ref = reference_index(records)
    base = _round_medians(records[ref]) if ref is not None and len(_round_medians(records[ref])) > 1 else None
    ratios: list[float | None] = []
    for r in records:
        rounds = _round_medians(r)
        if base is None or len(rounds) < 2:
            ratios.append(None)
            continue
        ratios.append(statistics.median(a / b for a, b in zip(rounds, base, strict=False)))
    return ratios


def state_notes(records: list[dict[str, Any]]) -> list[str]:
    """A note per record whose rounds' medians are far apart: the machine changed speed while it ran."""
    notes = []
    for r in records:
        rounds = _round_medians(r)
        if len(rounds) > 1 and max(rounds) > STATE_CHANGE * min(rounds):
            notes.append(
                f"{r['artifact']['name']}: its rounds' medians ran from {min(rounds):.2f} to {max(rounds):.2f} ms: the "
                "machine changed speed between rounds, so the median mixes its states; the 'paired' ratio compares "
                "processes that ran back to back"
            )
    return notes


def results_table(records: list[dict[str, Any]]) -> Table:
    """One row per record; ratios are medians relative to the reference record (:func:`reference_index`, named
    in the title), and (several rounds) paired round by round (:func:`paired_ratios`). Device and threads go in
    the title when every record shares them. MB: on the host the model's share of the process's memory (peak
    minus before the load); on a device, what its runner reports."""
    ref = reference_index(records)
    base = records[ref]["stats"]["median"] if ref is not None else None
    paired = paired_ratios(records)
    show_paired = any(ratio is not None for ratio in paired)
    where = {(r["device"], r["threads"]) for r in records}
    common = len(where) == 1
    title = "latency in ms, inference only"
    if common:
        device, threads = where.pop()
        title += f" ({device}, {threads} threads)"
    if ref is not None and len(records) > 1:
        title += f"; ratios against {records[ref]['artifact']['name']}"
    columns = ["artifact", "runtime"] + ([] if common else ["device", "thr"])
    columns += ["n", "median", "p90", "mean", "trim", "std", "min", "load", "MB", "ratio"]
    columns += ["paired"] if show_paired else []
    table = Table(*columns, title=title)
    for r, pair in zip(records, paired, strict=True):
        s = r["stats"]
        lead = [r["artifact"]["name"], r["runtime"]] + ([] if common else [r["device"], str(r["threads"] or "")])
        if not s.get("median") and not s.get("mean"):
            why = r.get("reason") or r.get("error", "")
            table.add_row(*lead, f"[yellow]{r['status']}[/]", why[:60], *[""] * (9 if show_paired else 8))
            continue
        if r["status"] != "ok":
            lead[0] += f" [red]({r['status']})[/]"
        median = s.get("median")
        table.add_row(
            *lead,
            str(int(s["n"])),
            _ms(median),
            _ms(s.get("p90")),
            _ms(s.get("mean")),
            _ms(s.get("trimmed_mean")),
            _ms(s.get("std")),
            _ms(s.get("min")),
            _ms(r.get("load_ms")),
            "" if "memory_mb" not in r else f"{r['memory_mb'].get('model', r['memory_mb']['peak']):.0f}",
            f"{median / base:.2f}x" if base and median else "",
            *([f"{pair:.2f}x" if pair is not None else ""] if show_paired else []),
        )
    return table


# precision -> (the environment's list of the instructions it needs, what timing it without them means)
MISSING_INSTRUCTIONS = {
    **dict.fromkeys(
        ("int8", "dynamic-int8", "w8a8"),
        (
            "int8_dot_products",
            "no int8 dot-product instructions (x86 VNNI, Arm SDOT): its int8 GEMMs run at about fp32's pace, so "
            "int8 gains here understate a CPU that has them",
        ),
    ),
    "fp16": (
        "fp16_arithmetic",
        "no fp16 arithmetic (Arm FEAT_FP16, x86 AVX512-FP16): XNNPACK converts to fp32 and back around every op, "
        "so fp16 timings here say nothing of a phone's",
    ),
}


def _compute_precision(record: dict[str, Any]) -> str | None:
    """The precision the artifact computes in, from its manifest: an fp16 recipe whose program takes float32
    (fp16 weights in a .tflite, a Core ML model) leaves the arithmetic to the runtime, so it does not count."""
    from ..errors import EdgevitError
    from ..inspection import read_manifest

    try:
        manifest = read_manifest(Path(record["artifact"]["path"])) or {}
    except EdgevitError:
        return None
    precision = manifest.get("recipe", {}).get("precision")
    if precision == "fp16" and manifest.get("input", {}).get("dtype") != "float16":
        return None
    return precision


def hardware_notes(records: list[dict[str, Any]]) -> list[str]:
    """One note per device and precision timed on cores without the instructions that precision runs fast on
    (int8 dot products, fp16 arithmetic): the speed there understates a phone's."""
    notes = {}
    for r in records:
        env = (r.get("environment") or {}).get("before") or {}
        precision = _compute_precision(r) if r.get("status") == "ok" else None  # only what was timed
        if precision not in MISSING_INSTRUCTIONS:
            continue
        instructions, meaning = MISSING_INSTRUCTIONS[precision]
        if env.get(instructions) == [] and (r["device"], instructions) not in notes:
            cpu = env.get("cpu") or env.get("soc") or "this CPU"
            notes[r["device"], instructions] = f"{r['device']} ({cpu}) has {meaning}"
    return list(notes.values())


def compare_table(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[Table, int]:
    """Median and p90 of each new record against the old record with the same artifact name, device, runtime and
    threads that ran in full; returns the table and how many records matched. A row says when the file's bytes
    or the CPU differ from the old record's (a re-export, another machine), and a new record with no old one
    gets a row that says so."""
    previous = {key(r): r for r in old if r["status"] == "ok" and r["stats"].get("median")}
    table = Table(
        "artifact",
        "device",
        "runtime",
        "thr",
        "old median",
        "new median",
        "new/old",
        "old p90",
        "new p90",
        "differs",
        title="against the earlier run",
    )
    matched = 0
    for r in new:
        before = previous.get(key(r))
        if not r["stats"].get("median"):
            continue
        if before is None:
            lead = (r["artifact"]["name"], r["device"], r["runtime"], str(r["threads"] or ""))
            table.add_row(*lead, "", _ms(r["stats"]["median"]), "", "", "", "no earlier record")
            continue
        matched += 1
        ratio = r["stats"]["median"] / before["stats"]["median"]
        colour = "green" if ratio < 0.95 else "red" if ratio > 1.05 else "white"
        table.add_row(
            r["artifact"]["name"],
            r["device"],
            r["runtime"],
            str(r["threads"] or ""),
            _ms(before["stats"]["median"]),
            _ms(r["stats"]["median"]),
            f"[{colour}]{ratio:.2f}x[/]",
            _ms(before["stats"].get("p90")),
            _ms(r["stats"].get("p90")),
            _differences(before, r),
        )
    return table, matched


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What else changed between two records of one artifact name: its bytes, the CPU."""
    changed = []
    if old["artifact"].get("sha256") != new["artifact"].get("sha256"):
        changed.append("file")
    cpus = [(r.get("environment", {}).get("before") or {}).get("cpu") for r in (old, new)]
    if cpus[0] != cpus[1]:
        changed.append("cpu")
    return ", ".join(changed)


def plot(records: list[dict[str, Any]], path: Path) -> None:
    """Box plot of the raw samples per artifact (records with statistics only are drawn as their median)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_write_bytes

    shown = [r for r in records if r["samples_ms"] or r["stats"].get("median")]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * max(len(shown), 1)))
    labels = [f"{r['artifact']['name']}\n{r['device']} / {r['runtime']} / {r['threads'] or '-'} thr" for r in shown]
    data = [r["samples_ms"] or [r["stats"]["median"]] for r in shown]
    if data:
        ax.boxplot(data, vert=False, showfliers=True, whis=(5, 95))
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
        for i, r in enumerate(shown, start=1):
            ax.annotate(f"{r['stats']['median']:.2f} ms", (r["stats"]["median"], i + 0.3), fontsize=8, ha="center")
    ax.set_xlabel("latency per inference (ms); box: quartiles, whiskers: p5-p95")
    ax.set_xlim(left=0)
    ax.invert_yaxis()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def op_profile_table(name: str, profile: dict[str, Any], top: int = 12) -> Table:
    """The op types that take the most time in the median traced run, the rest summed in one row."""
    title = (
        f"{name}: time per op type, the median of {profile['runs']} traced runs by op total "
        f"({profile['op_count']} ops, "
        f"{profile['ops_ms']:.2f} ms of ops in a {profile['execute_ms']:.2f} ms run)"
    )
    table = Table("op", "count", "ms", "share", title=title)
    rows = profile["ops"]
    for row in rows[:top]:
        table.add_row(row["op"], str(row["count"]), f"{row['ms']:.3f}", f"{row['share']:.1%}")
    rest = rows[top:]
    if rest:
        ms, count = sum(r["ms"] for r in rest), sum(r["count"] for r in rest)
        table.add_row(f"{len(rest)} other op types", str(count), f"{ms:.3f}", f"{ms / profile['ops_ms']:.1%}")
    return table
