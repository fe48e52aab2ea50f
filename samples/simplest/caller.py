"""Calls the simplest service from another process: ``python samples/simplest/caller.py``."""

import asyncio

from micro import Micro


async def main() -> None:
    async with Micro(service="simplest-caller") as micro:
        product = await micro.act("multiply two numbers", {"first": 5, "second": 3})
        print(product)


if __name__ == "__main__":
    asyncio.run(main())
