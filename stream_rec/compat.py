"""Corrections to dependency behaviour that the pipeline's guarantees rest on.

Applied once per worker process by :func:`apply` (from ``create_app``). Each one names the
behaviour it corrects and the test that shows it (``tests/integration/test_reliability.py``).
"""

from __future__ import annotations

from typing import Any


def apply() -> None:
    _back_off_failed_metadata_updates()
    _never_commit_past_unprocessed_events()


def _back_off_failed_metadata_updates() -> None:
    """Make a failed metadata update wait ``retry_backoff_ms`` before it reports failure.

    aiokafka's producer sender, with data pending for a partition whose leader is unknown,
    loops on ``force_metadata_update()`` and expects it to "wait backoff time"; with the broker
    down the update fails at once (connection refused), so the loop spins: thousands of connect
    attempts and error lines a second, most of a core (measured: 63-77% of one core on a
    loaded 2-core machine, 6-8% with this back-off). Successful updates are not delayed.
    Applied once per process, by :func:`create_app` (workers only).
    """
    import asyncio

    from aiokafka.client import AIOKafkaClient

    if getattr(AIOKafkaClient, "_stream_rec_backoff", False):
        return
    force = AIOKafkaClient.force_metadata_update

    async def _after(client: AIOKafkaClient, update: Any) -> Any:
        ok = await update
        if not ok:
            await asyncio.sleep(client._retry_backoff)
        return ok

    def force_metadata_update(self: AIOKafkaClient) -> Any:
        return asyncio.ensure_future(_after(self, force(self)))

    AIOKafkaClient.force_metadata_update = force_metadata_update
    AIOKafkaClient._stream_rec_backoff = True


def _never_commit_past_unprocessed_events() -> None:
    """Keep Faust's offset commits at-least-once across rebalances and restarts.

    Two Faust behaviours let a commit move past an event that was never processed (seen as
    events without recommendations after a worker was SIGKILLed and restarted, or after a
    second worker joined or died):

    * a message fetched under an older consumer generation is skipped by the stream after a
      rebalance, and *acknowledged* anyway — so its offset can be committed. Here such
      messages are not acknowledged; after the rebalance Faust seeks to the committed offset
      and they are read again.
    * ``Consumer._new_offset`` allows a one-offset hole at the head of the acknowledged
      offsets (``min(acked) - committed > 1``, where ``committed`` is already the next offset
      to read). Here a hole at the head means nothing is committed until it is filled.
    """
    from faust.transport.consumer import Consumer

    if getattr(Consumer, "_stream_rec_commit_guard", False):
        return
    original_ack = Consumer.ack
    original_new_offset = Consumer._new_offset

    def ack(self: Any, message: Any) -> bool:
        current = getattr(self.app, "consumer_generation_id", None)
        generation = getattr(message, "generation_id", None)
        if current is not None and generation is not None and generation != current:
            return False
        return bool(original_ack(self, message))

    def _new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None and not self._gap[tp] and min(acked) > committed:
            return None
        result: int | None = original_new_offset(self, tp)
        return result

    Consumer.ack = ack  # type: ignore[method-assign]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    Consumer._stream_rec_commit_guard = True  # type: ignore[attr-defined]
