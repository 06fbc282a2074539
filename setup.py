"""Package list: every package under edgevit/ (some are namespace packages), plus the top-level recipes/ and
devices/ folders shipped as edgevit.recipes and edgevit.devices (their folders are set by package-dir in
pyproject.toml). pyproject.toml alone cannot add packages to a discovered list, hence this file."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["edgevit", "edgevit.*"], exclude=["*.__pycache__"]),
        "edgevit.recipes",
        "edgevit.devices",
    ]
)
