"""Builds the simulated NPU (runtime_c/) into rknnlink/_native/librknnrt_sim.so during `pip install`.

The library is a plain C shared object loaded through ctypes, not a Python extension module, so the
build step only borrows setuptools' compiler plumbing and gives the file its plain name.
"""

from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
C_SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "runtime_c" / "src").rglob("*.c"))
C_FLAGS = ["-std=c11", "-O3", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-D_GNU_SOURCE",
           "-fno-math-errno", "-ffp-contract=off"]


class BuildSharedLibrary(build_ext):
    """build_ext that names the output `librknnrt_sim.so` instead of `*.cpython-*.so`."""

    def get_ext_filename(self, fullname: str) -> str:
        return str(Path(*fullname.split(".")).with_suffix(".so"))

    def get_export_symbols(self, ext: Extension) -> list:
        return []  # no PyInit_*: this is not an extension module


setup(
    # rknnlink_server.systemd holds only the unit file (package data): listed so that setuptools ships it
    # without its "absent from packages" warning.
    packages=find_packages("host") + find_packages("board_server") + ["rknnlink_server.systemd"],
    package_dir={"rknnlink": "host/rknnlink", "rknnlink_server": "board_server/rknnlink_server"},
    ext_modules=[
        Extension(
            "rknnlink._native.librknnrt_sim",
            sources=C_SOURCES,
            include_dirs=["runtime_c/include", "runtime_c/src"],
            extra_compile_args=C_FLAGS,
            libraries=["m", "pthread"],
        )
    ],
    cmdclass={"build_ext": BuildSharedLibrary},
)
