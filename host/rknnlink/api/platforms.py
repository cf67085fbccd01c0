"""Target platforms the toolkit accepts, and what each NPU can do."""

from __future__ import annotations

from dataclasses import dataclass

from rknnlink.runtime.platforms import find_platform, platform_names

# RKNN-Toolkit2 2.5.0's accepted target_platform values (its config() docstring), from the one platform
# table (runtime_c/src/platforms.c, read by rknnlink.runtime.platforms).
SUPPORTED_PLATFORMS = platform_names()


@dataclass(frozen=True)
class NpuTraits:
    """What the connected-board API must check before asking a board for something it cannot do."""

    cores: int
    perf_detail: bool = True  # RV1103/RV1106's librknnmrt has no PERF_DETAIL/PERF_RUN


CORE_MASK_NAMES = {0: "NPU_CORE_AUTO", 1: "NPU_CORE_0", 2: "NPU_CORE_1", 4: "NPU_CORE_2",
                   3: "NPU_CORE_0_1", 7: "NPU_CORE_0_1_2", 0xFFFF: "NPU_CORE_ALL"}


def normalize_platform(name: object, argument: str = "target_platform") -> str:
    """Lower-case and validate a platform name, raising a ValueError that lists the valid ones."""
    if not isinstance(name, str) or name.lower() not in SUPPORTED_PLATFORMS:
        raise ValueError(f"Invalid {argument} {name!r}! Use one of: {', '.join(SUPPORTED_PLATFORMS)}.")
    return name.lower()


def traits(platform: str) -> NpuTraits:
    if platform not in SUPPORTED_PLATFORMS:
        return NpuTraits(cores=1)
    row = find_platform(platform)
    return NpuTraits(cores=row.cores, perf_detail=row.perf_detail)


def check_core_mask(platform: str, core_mask: int) -> None:
    """Reject masks the platform's NPU cannot honour, as librknnrt would, but with the reason spelled out."""
    if core_mask not in CORE_MASK_NAMES:
        raise ValueError(f"Invalid core_mask {core_mask!r}: use one of RKNN.NPU_CORE_* "
                         f"({', '.join(f'{v}={k}' for k, v in CORE_MASK_NAMES.items())}).")
    if core_mask in (0, 0xFFFF):
        return
    cores = traits(platform).cores
    if cores == 1:
        raise ValueError(f"core_mask={CORE_MASK_NAMES[core_mask]} is only valid on multi-core NPUs "
                         f"(rk3588, rk3576); {platform} has one core. Use RKNN.NPU_CORE_AUTO.")
    highest = core_mask.bit_length()
    if highest > cores:
        raise ValueError(f"core_mask={CORE_MASK_NAMES[core_mask]} needs {highest} NPU cores; {platform} has "
                         f"{cores}.")
