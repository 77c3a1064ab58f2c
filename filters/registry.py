"""Builds the enabled filters from `[filters.*]`, in the order they run within a stage.

Each filter module exposes `build(section, deps) -> Filter`. Modules are imported only when their filter is
enabled, so a deployment without Rspamd or ClamAV never loads their clients. Each filter is linked to its
section, whose `mode`, `timeout` and `fail_open` the chain applies.
"""

from __future__ import annotations

import importlib
from typing import cast

from filters.base import Filter
from filters.chain import ChainLink
from filters.config import FiltersConfig, FilterSection
from filters.deps import FilterDeps

# Cheap, local checks first; network checks after; the throttle counts every connection, so it leads.
FILTER_ORDER = ("throttle", "dnsbl", "fqdn", "spf", "clamav", "rspamd", "dkim")
_MODULES = {"dkim": "filters.dkim_dmarc"}


def build_links(config: FiltersConfig, deps: FilterDeps) -> list[ChainLink]:
    links: list[ChainLink] = []
    for name in FILTER_ORDER:
        section = cast(FilterSection, getattr(config, name))
        if not section.enabled:
            continue
        module = importlib.import_module(_MODULES.get(name, f"filters.{name}"))
        links.append(ChainLink(cast(Filter, module.build(section, deps)), section))
    return links
