"""The helpdesk every delivery test talks to: a real TicketReceiver on loopback, verifying signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from postroom.helpdesk.receiver import TicketReceiver
from tests.support.harness import SECRET


@pytest.fixture
async def helpdesk() -> AsyncIterator[TicketReceiver]:
    receiver = TicketReceiver(SECRET)
    await receiver.start()
    yield receiver
    await receiver.stop()
