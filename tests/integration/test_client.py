"""The client on the real broker: produce through :class:`stream_rec.client.Producer`, read
typed recommendations through :class:`~stream_rec.client.RecommendationConsumer`, with the
worker writing msgpack (``STREAM_REC_OUTPUT_CODEC=msgpack``)."""

from __future__ import annotations

import asyncio
import time

import msgpack
import pytest

from stream_rec.client import Producer, Recommendation, RecommendationConsumer
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration


def test_client_round_trip_with_msgpack_outputs(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    w = pipeline.worker(STREAM_REC_OUTPUT_CODEC="msgpack").start()

    async def items() -> None:
        async with Producer(settings, codec="msgpack") as p:
            for n in range(30):
                await p.item(f"i{n}", f"Title {n}", text=f"item {n}", attributes={"n": str(n)})

    asyncio.run(items())
    w.wait_ready()
    users = [f"u{n}" for n in range(10)]

    async def run() -> tuple[list[Recommendation], int]:
        got: list[Recommendation] = []
        async with RecommendationConsumer(settings, from_beginning=True) as recs:
            async with Producer(settings) as p:  # JSON inputs beside msgpack outputs
                for n, u in enumerate(users):
                    await p.behavior(u, f"i{n}", "view")
                await p.flush()
                deadline = time.monotonic() + 120
                while len(got) < len(users) and time.monotonic() < deadline:
                    got += await recs.getmany(timeout_ms=500)
                for rec in got:  # feedback on the first item of each recommendation
                    await p.feedback(rec.user_id, rec.items[0].item_id, "click", rec_id=rec.rec_id)
            return got, recs.invalid

    got, invalid = asyncio.run(run())
    assert invalid == 0
    assert sorted(r.user_id for r in got) == users, w.tail()
    assert all(len(r.items) == 10 and r.model_version for r in got)
    raw = pipeline.consume("recommendations", len(users), timeout=30)
    assert all(r.value[:1] != b"{" for r in raw)  # the worker wrote msgpack
    examples = [msgpack.unpackb(m.value) for m in
                pipeline.consume("training-examples", len(users), timeout=60)]  # fmt: skip
    assert sorted(e["user_id"] for e in examples) == users
    assert {e["matched"] for e in examples} == {True}  # joined to their recommendations
    assert w.alive()
