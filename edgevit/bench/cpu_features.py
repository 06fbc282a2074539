"""Which int8 dot-product instructions a CPU has, read from its /proc/cpuinfo. With them (x86 VNNI, Arm SDOT)
XNNPACK's int8 GEMMs run several times faster than fp32; without them they widen to 16 bits and run at about
fp32's pace, so an int8 speed-up measured on such a CPU says little about a phone that has them."""

from __future__ import annotations

# cpuinfo flag -> the name users know it by
INT8_DOT_PRODUCT_FLAGS = {
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8",
    "asimddp": "Arm dot product (SDOT)",
    "i8mm": "Arm int8 matrix multiply (SMMLA)",
}


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor listed: x86 writes them as 'flags', Arm as 'Features'."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def int8_dot_products(flags: set[str]) -> list[str]:
    return [label for flag, label in INT8_DOT_PRODUCT_FLAGS.items() if flag in flags]
