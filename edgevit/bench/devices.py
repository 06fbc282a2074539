"""Device profiles (``devices/*.yaml``): where a benchmark runs and how.

Built-in profiles are the top-level ``devices/`` folder, shipped as the package ``edgevit.devices``; a user's
live in a user folder (``user_dir()``, where ``edgevit devices probe`` writes them) or anywhere as a YAML
path. ``kind`` is ``host`` (this machine), ``android`` (a phone over adb) or ``apple`` (documents what runs
where; Apple devices are not driven from here).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import EdgevitError
from ..fileio import atomic_write_bytes, make_dir, read_yaml, refuse_overwrite

BUILTIN_DIR = Path(str(resources.files("edgevit.devices")))
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
    stall_seconds: float = 120.0  # a runner silent this long after its first output is hung
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
    for key in ("cooldown_seconds", "timeout_seconds", "stall_seconds"):
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
        stall_seconds=float(raw.get("stall_seconds", DeviceProfile.stall_seconds)),
        notes=str(raw.get("notes") or ""),
        source=src,
    )


def load_profile_file(path: Path) -> DeviceProfile:
    return parse_profile(read_yaml(path, "device profile", "fix the file or run `edgevit devices`"), str(path))


def user_dir() -> Path:
    """A user's own profiles: $EDGEVIT_HOME/devices, else $XDG_CONFIG_HOME/edgevit/devices, else
    ~/.config/edgevit/devices (outside the package, so they survive reinstalls and never mix with the shipped)."""
    if os.environ.get("EDGEVIT_HOME"):
        return Path(os.environ["EDGEVIT_HOME"]).expanduser() / "devices"
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config).expanduser() / "edgevit" / "devices"


def profile_paths() -> list[Path]:
    """Built-in profiles, then the user's (a user's profile replaces a built-in of the same name)."""
    paths = sorted(BUILTIN_DIR.glob("*.yaml"))
    user = user_dir()
    if user.is_dir() and user.resolve() != BUILTIN_DIR.resolve():
        paths += sorted(user.glob("*.yaml"))
    return paths


def all_profiles() -> dict[str, DeviceProfile]:
    profiles = (load_profile_file(p) for p in profile_paths())
    return {p.name: p for p in profiles}


def get_profile(name_or_path: str) -> DeviceProfile:
    """A profile by name (built in or in the user folder) or from a YAML path."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load_profile_file(Path(name_or_path))
    profiles = all_profiles()
    if name_or_path not in profiles:
        raise EdgevitError(
            f"unknown device '{name_or_path}'; choose one of: {', '.join(profiles)} (see `edgevit devices`), "
            "pass a YAML file, or write one with `edgevit devices probe`"
        )
    return profiles[name_or_path]


def probe(
    serial: str | None = None, name: str | None = None, output_dir: Path | None = None, force: bool = False
) -> tuple[Path, dict[str, Any]]:
    """Write a profile for a connected phone from its getprop and cpufreq data (big cores pinned).

    It goes to ``output_dir``, by default the user folder; never into the shipped profiles.
    Returns the file written and the profile.
    """
    import yaml

    from . import android_env
    from .adb import Adb

    folder = output_dir or user_dir()
    if folder.resolve() == BUILTIN_DIR.resolve():
        raise EdgevitError(f"{folder} holds the shipped device profiles; write yours to {user_dir()} instead")
    adb = Adb.connect(serial)
    env = android_env.capture(adb)
    name = name or re.sub(r"[^a-z0-9]+", "-", (env.get("model") or adb.serial).lower()).strip("-")
    path = folder / f"{name}.yaml"
    refuse_overwrite([path], force)
    make_dir(folder)
    profile = android_env.profile_from(env, name)
    atomic_write_bytes(path, yaml.safe_dump(profile, sort_keys=False).encode())
    return path, profile
