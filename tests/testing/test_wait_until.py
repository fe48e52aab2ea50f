import asyncio

import pytest

from micro.testing import wait_until


async def test_wait_until_returns_once_a_sync_condition_holds() -> None:
    flips: list[bool] = []
    asyncio.get_running_loop().call_later(0.05, flips.append, True)
    await wait_until(lambda: bool(flips), 2, "the flip")
    assert flips == [True]


async def test_wait_until_awaits_an_async_condition() -> None:
    calls = 0

    async def third_time() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    await wait_until(third_time, 2, interval=0.001)
    assert calls == 3


async def test_wait_until_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"the impossible did not hold within 0\.05s"):
        await wait_until(lambda: False, 0.05, "the impossible")
