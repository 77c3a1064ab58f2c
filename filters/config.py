"""Configuration of the filter stages: `[filters.<name>]` tables."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FiltersConfig:
    """Filter sections are added here, one dataclass per filter, each with `enabled` and `mode`."""
