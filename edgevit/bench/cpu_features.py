"""Which int8 dot-product and fp16 arithmetic instructions a CPU has, read from its /proc/cpuinfo.

With int8 dot products (x86 VNNI, Arm SDOT) XNNPACK's int8 GEMMs run several times faster than fp32; without them
they widen to 16 bits and run at about fp32's pace. With fp16 arithmetic (Arm FEAT_FP16 on every ARMv8.2 phone
core, x86 AVX512-FP16) XNNPACK computes fp16 at up to twice the fp32 rate; without it, it converts to fp32 and
back around every op. A speed-up measured on a CPU without the instructions says little about a phone with them."""

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


FP16_ARITHMETIC_FLAGS = {
    "avx512fp16": "AVX512-FP16",
    "asimdhp": "Arm fp16 arithmetic (FEAT_FP16)",
}


def int8_dot_products(flags: set[str]) -> list[str]:
    return [label for flag, label in INT8_DOT_PRODUCT_FLAGS.items() if flag in flags]


def fp16_arithmetic(flags: set[str]) -> list[str]:
    return [label for flag, label in FP16_ARITHMETIC_FLAGS.items() if flag in flags]
