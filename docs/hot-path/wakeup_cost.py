"""CPU time of one wake-up of Faust's periodic batching (docs/hot-path.md, round four).

``Stream.take_events(n, within=t)`` waits with mode's ``Service.wait_for_stopped(event,
timeout=t)`` every ``t`` seconds, events or not. This measures that wait alone, with no event
ever coming, at the 5 ms default, and the plain asyncio wait ``take_batches`` uses:

    python docs/hot-path/wakeup_cost.py
"""

from __future__ import annotations

import asyncio
import time

from mode import Service


async def main(seconds: float = 5.0, timeout: float = 0.005) -> None:
    service = Service()
    await service.start()
    never = asyncio.Event()
    for name in ("mode wait_for_stopped", "asyncio.timeout + Event.wait"):
        cpu, wall, n = time.process_time(), time.monotonic(), 0
        while time.monotonic() - wall < seconds:
            if name.startswith("mode"):
                await service.wait_for_stopped(never, timeout=timeout)
            else:
                try:
                    async with asyncio.timeout(timeout):
                        await never.wait()
                except TimeoutError:
                    pass
            n += 1
        used = time.process_time() - cpu
        print(f"{name}: {n / seconds:.0f} wake-ups/s, {1e6 * used / n:.0f} µs CPU each, "
              f"{100 * used / seconds:.1f} % of a core")  # fmt: skip
    await service.stop()


if __name__ == "__main__":
    asyncio.run(main())
