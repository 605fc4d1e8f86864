"""``stream-rec bench pipeline`` end to end on the real broker, at a small scale: drain rounds
on their own topics, medians over the rounds, the CPU of what shares the cores, Faust alone
(the bare agent echoing each event) timed at the same load, and nothing left behind on the
broker."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
from pathlib import Path

from stream_rec.bench.pipeline import local_broker_pid, run
from stream_rec.settings import load_settings


async def _bench_topics(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t for t in await admin.list_topics() if t.startswith("bench-")}
    finally:
        await admin.close()


def test_drain_rounds_take_turns_and_report_medians(bootstrap: str, tmp_path: Path) -> None:
    base = load_settings(bootstrap_servers=bootstrap)
    before = asyncio.run(_bench_topics(bootstrap))
    out = tmp_path / "bench.json"

    res = run(base, events=300, out=out, rounds=2, latency_rate=50, latency_seconds=2)

    assert json.loads(out.read_text())["rounds"] == 2
    fallback, bare = res["subjects"]["fallback"], res["subjects"]["bare"]
    for subject in (fallback, bare):
        rates = subject["events_per_s_rounds"]
        assert len(rates) == 2
        assert all(r > 0 for r in rates)
        assert subject["events_per_s"] == statistics.median(rates)
    ratios = fallback["throughput_ratio_to_bare_rounds"]
    assert ratios == [f / b for f, b in zip(fallback["events_per_s_rounds"],
                                            bare["events_per_s_rounds"], strict=True)]  # fmt: skip
    assert fallback["throughput_ratio_to_bare"] == statistics.median(ratios)
    # the latency run: 2 s at 50/s, every event answered, and what used the cores meanwhile
    assert fallback["latency_events"] == 100
    assert fallback["latency_worker_cpu_cores"] > 0
    assert fallback["latency_bench_cpu_cores"] > 0
    if local_broker_pid(base) is not None:
        assert fallback["latency_broker_cpu_cores"] > 0
    else:
        assert math.isnan(fallback["latency_broker_cpu_cores"])
    # Faust alone at the same load: the bare agent sending each event on, every one timed
    echo = res["subjects"]["bare-echo"]
    assert echo["offered_events_per_s"] == 50
    assert echo["latency_events"] == 100
    assert 0 < echo["latency_p50_ms"] <= echo["latency_p99_ms"] < 30_000
    assert echo["latency_worker_cpu_cores"] > 0
    assert "latency_events" not in bare  # the throughput anchor is drained only
    # every round's topics (and the groups' changelogs) are deleted again
    assert asyncio.run(_bench_topics(bootstrap)) == before
