"""What the benchmark tables print about the software they measured."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def installed(dist: str) -> str:
    """The installed version of a distribution, or "?" when it is not installed."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"
