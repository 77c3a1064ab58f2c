"""Configuration of the outbound relay: `[submission]`, `[outbound]`, `[dkim]`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SubmissionConfig:
    enabled: bool = False


@dataclass
class OutboundConfig:
    enabled: bool = False


@dataclass
class DkimConfig:
    pass
