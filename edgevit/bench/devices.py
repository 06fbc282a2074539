"""Device profiles (``devices/*.yaml``): where a benchmark runs and how.

Built-in profiles ship in ``edgevit/devices``; a user's live in ``./devices`` (``edgevit devices probe``
writes them there) or anywhere as a YAML path. ``kind`` is ``host`` (this machine), ``android`` (a phone
over adb) or ``apple`` (documents what runs where; Apple devices are not driven from here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EdgevitError
from ..fileio import read_yaml

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "devices"
USER_DIR = Path("devices")
KINDS = ("host", "android", "apple")
RUNNER_KINDS = ("executor_runner", "benchmark_model")
REMOTE_ROOT = "/data/local/tmp/"


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    kind: str
    description: str = ""
    threads: int | None = None  # default for --threads
    # android
    serial: str | None = None  # adb serial; None: the only device connected
    abi: str | None = None  # checked against ro.product.cpu.abi before anything is pushed
    cpu_mask: str | None = None  # taskset mask (hex) of the cores to run on, e.g. the big cores
    remote_dir: str = REMOTE_ROOT + "edgevit"
    runners: dict[str, str] = field(default_factory=dict)  # runner kind -> host path of the binary to push
    cooldown_seconds: float = 30.0  # before each artifact, or until the thermal status is back to 0
    timeout_seconds: float = 600.0  # per remote command
    # apple
    notes: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        return d


def _fail(src: str, msg: str) -> EdgevitError:
    return EdgevitError(f"device profile {src}: {msg}")


def parse_profile(raw: Any, src: str) -> DeviceProfile:
    """Validate a profile mapping; errors name the field and what it should be."""
    if not isinstance(raw, dict):
        raise _fail(src, "must be a YAML mapping with at least 'name' and 'kind'")
    known = {f for f in DeviceProfile.__dataclass_fields__ if f != "source"}
    extra = sorted(set(raw) - known)
    if extra:
        raise _fail(src, f"unknown field '{extra[0]}'; allowed fields: {', '.join(sorted(known))}")
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        raise _fail(src, "field 'name' is required and must be a string")
    if raw.get("kind") not in KINDS:
        raise _fail(src, f"field 'kind' is {raw.get('kind')!r}; choose one of: {', '.join(KINDS)}")
    threads = raw.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise _fail(src, f"field 'threads' must be a positive integer, got {threads!r}")
    mask = raw.get("cpu_mask")
    if mask is not None:
        mask = str(mask)
        try:
            if int(mask, 16) <= 0:
                raise ValueError
        except ValueError:
            raise _fail(src, f"field 'cpu_mask' must be a non-zero hex mask such as f0, got {mask!r}") from None
    runners = raw.get("runners") or {}
    if not isinstance(runners, dict) or any(k not in RUNNER_KINDS for k in runners):
        raise _fail(src, f"field 'runners' maps {' / '.join(RUNNER_KINDS)} to the host path of each binary")
    remote_dir = str(raw.get("remote_dir", DeviceProfile.remote_dir))
    if not remote_dir.startswith(REMOTE_ROOT) or ".." in remote_dir:
        raise _fail(src, f"field 'remote_dir' must be a folder under {REMOTE_ROOT}, got {remote_dir!r}")
    for key in ("cooldown_seconds", "timeout_seconds"):
        value = raw.get(key, getattr(DeviceProfile, key))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise _fail(src, f"field '{key}' must be a non-negative number, got {value!r}")
    return DeviceProfile(
        name=raw["name"],
        kind=raw["kind"],
        description=str(raw.get("description") or ""),
        threads=threads,
        serial=None if raw.get("serial") is None else str(raw["serial"]),
        abi=raw.get("abi"),
        cpu_mask=mask,
        remote_dir=remote_dir.rstrip("/"),
        runners={k: str(v) for k, v in runners.items()},
        cooldown_seconds=float(raw.get("cooldown_seconds", DeviceProfile.cooldown_seconds)),
        timeout_seconds=float(raw.get("timeout_seconds", DeviceProfile.timeout_seconds)),
        notes=str(raw.get("notes") or ""),
        source=src,
    )


def load_profile_file(path: Path) -> DeviceProfile:
    return parse_profile(read_yaml(path, "device profile", "fix the file or run `edgevit devices`"), str(path))


def profile_paths() -> list[Path]:
    """Built-in profiles, then the user's in ./devices (a user's profile replaces a built-in of the same name)."""
    paths = sorted(BUILTIN_DIR.glob("*.yaml"))
    if USER_DIR.is_dir():
        paths += sorted(USER_DIR.glob("*.yaml"))
    return paths


def all_profiles() -> dict[str, DeviceProfile]:
    profiles = (load_profile_file(p) for p in profile_paths())
    return {p.name: p for p in profiles}


def get_profile(name_or_path: str) -> DeviceProfile:
    """A profile by name (built in or in ./devices) or from a YAML path."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load_profile_file(Path(name_or_path))
    profiles = all_profiles()
    if name_or_path not in profiles:
        raise EdgevitError(
            f"unknown device '{name_or_path}'; choose one of: {', '.join(profiles)} (see `edgevit devices`), "
            "pass a YAML file, or write one with `edgevit devices probe`"
        )
    return profiles[name_or_path]
