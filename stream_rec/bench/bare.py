"""The benchmark's anchor: a bare Faust agent that only counts events per key in a table.

Same broker, same Faust settings and the same input as the pipeline, but no decoding,
validation, scoring or output: what Faust itself costs per event on this machine.
Run as ``python -m stream_rec.bench.bare`` with the worker's ``STREAM_REC_*`` variables.
"""

from __future__ import annotations

from typing import Any

import faust

from stream_rec.settings import Settings, load_settings


def create_bare_app(settings: Settings) -> faust.App:
    from stream_rec.app import new_faust_app

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

    @app.agent(topic, name="bare_count")
    async def bare_count(stream: Any) -> None:
        async for event in stream.events():
            counts[event.key] += 1

    return app


def main() -> None:
    from stream_rec.app import faust_worker

    settings = load_settings()
    settings.serving.data_dir.mkdir(parents=True, exist_ok=True)
    faust_worker(create_bare_app(settings), "warning").execute_from_commandline()  # as the workers


if __name__ == "__main__":
    main()
