"""The benchmark's anchor: a bare Faust agent that only counts events per key in a table.

Same broker, same Faust settings and the same input as the pipeline, but no decoding,
validation, scoring or output: what Faust itself costs per event on this machine.
Run as ``python -m stream_rec.bench.bare`` with the worker's ``STREAM_REC_*`` variables.

``--echo`` (the latency anchor): each event is also sent on, unchanged, to ``<prefix>echo``
(one ``send`` per event, as Faust's own examples do), so the bench can time event→output for
Faust alone at the pipeline's offered load. Throughput runs use the agent without it.
"""

from __future__ import annotations

from typing import Any

import faust

from stream_rec.settings import Settings, load_settings

ECHO_TOPIC = "echo"  # after the prefix


def create_bare_app(settings: Settings, *, echo: bool = False) -> faust.App:
    from stream_rec.app import assigned_partitions, new_faust_app

    app = new_faust_app(faust.App, f"{settings.kafka.app_id}-bare", settings)  # as the workers
    topic = app.topic(
        f"{settings.kafka.topic_prefix}behavior",
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.kafka.partitions,
    )
    counts = app.Table(
        "bare_counts", default=int, partitions=settings.kafka.partitions, key_type=bytes
    )

    out = app.topic(
        f"{settings.kafka.topic_prefix}{ECHO_TOPIC}", key_serializer="raw", value_serializer="raw"
    )

    @app.agent(topic, name="bare_count")
    async def bare_count(stream: Any) -> None:
        async for event in stream.events():
            counts[event.key] += 1
            if echo:
                await out.send(key=event.key, value=event.value)

    @app.page("/stream-rec/status")  # what the bench waits for before a latency run
    async def status_page(web: Any, request: Any) -> Any:
        return web.json(
            {
                "catalog_caught_up": True,  # it keeps no catalogue
                "assignment": assigned_partitions(app),
                "rebalancing": bool(app.rebalancing),
            }
        )

    return app


def main() -> None:
    import sys

    from stream_rec.app import faust_worker

    echo = "--echo" in sys.argv[1:]
    settings = load_settings()
    settings.serving.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_bare_app(settings, echo=echo)
    faust_worker(app, "warning").execute_from_commandline()  # as the pipeline's workers


if __name__ == "__main__":
    main()
