"""A crashed worker comes back fast and never publishes an empty recommendation.

On the real broker, with real ``stream-rec worker`` processes: a worker SIGKILLed in the middle
of a stream and restarted at once (static group membership) serves again within seconds, with
no empty recommendation and no event lost (``stream_rec.bench.recovery``, the same run as
``stream-rec bench recovery``); a worker joins the group only once its catalogue is loaded; a
score that still comes out empty is dead-lettered; and a second live worker under the same
static membership id fences the first, which stops.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from stream_rec.bench.recovery import crash_run, figures
from tests.integration.conftest import (
    Pipeline,
    WorkerProc,
    behavior,
    items_messages,
    metric,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.mark.timeout(420)
def test_sigkill_and_restart_sends_no_empty_recommendation_and_serves_within_seconds(
    pipeline: Pipeline,
) -> None:
    # 200 users x 30 events, killed after 30 % were answered, restarted at once on the same
    # data folder: the same static membership id, so no wait for the dead member's session.
    run = asyncio.run(
        crash_run(
            pipeline.settings,
            pipeline.tmp,
            users=200,
            events_per_user=30,
            rate=100.0,
            kill_after=0.3,
            extra_env={"STREAM_REC_LOG_LEVEL": "info"},
        )  # fmt: skip
    )
    f = figures(run)
    print(f"\n[recovery] {json.dumps(f)}")
    assert f["events"] == 6000
    assert f["empty_recommendations"] == 0, f
    assert f["events_without_recommendation"] == 0, f
    assert f["dead_letters"] == {}, f
    # Dynamic membership waits for the dead member's 10 s session timeout before anyone gets
    # its partitions; a static member is back in what its own start-up takes.
    assert f["recovery_s"] is not None and f["recovery_s"] < 8.0, f
    assert f["outage_p99_s"] is not None and f["outage_p99_s"] < 8.0, f


@pytest.mark.timeout(240)
def test_a_worker_takes_partitions_only_with_its_catalogue_loaded(pipeline: Pipeline) -> None:
    # Events already wait when the worker starts: the first micro-batches would be scored at
    # once, before a catalogue replica that starts with them has read the items.
    pipeline.produce("items", items_messages(2000))
    events = [(f"c{n % 50}".encode(), behavior(f"c{n % 50}", f"i{n % 2000}")) for n in range(600)]
    pipeline.produce("behavior", events)
    w = pipeline.worker("w").start()
    recs = pipeline.consume("recommendations", len(events), timeout=150, settle=2.0)
    docs = [json.loads(r.value) for r in recs]
    assert len({d["rec_id"] for d in docs}) == len(events)
    assert [d for d in docs if not d["items"]] == []
    st = w.status()
    assert st is not None and st["catalog_items"] == 2000 and all(st["ready_to_join"].values())


@pytest.mark.timeout(180)
def test_an_empty_score_is_dead_lettered_never_sent(pipeline: Pipeline) -> None:
    pipeline.produce("items", items_messages(3))
    w = pipeline.worker("w").start()
    w.wait_ready()
    # The user watches the whole catalogue: after the third event nothing is left to show.
    pipeline.produce("behavior", [(b"all", behavior("all", f"i{k}")) for k in range(3)])
    letters = pipeline.consume("dead-letters", 1, timeout=60, settle=2.0)
    recs = pipeline.consume("recommendations", 2, timeout=30, settle=2.0)
    assert [json.loads(r.value)["items"] != [] for r in recs] == [True, True]
    (dl,) = [json.loads(r.value) for r in letters]
    assert dl["error"].startswith("empty_recommendation:"), dl
    assert dl["topic"] == pipeline.topic("behavior") and letters[0].key == b"all"
    got = metric(
        w, "stream_rec_dead_letters_total", topic="behavior", reason="empty_recommendation"
    )
    assert got == 1.0
    assert w.alive()


@pytest.mark.timeout(240)
def test_a_second_live_worker_with_the_same_id_fences_the_first(pipeline: Pipeline) -> None:
    pipeline.produce("items", items_messages(50))
    a = pipeline.worker("a", STREAM_REC_WORKER_ID="twin").start()
    a.wait_ready()
    assert a.status()["group_instance_id"] == "twin"  # type: ignore[index]
    b = pipeline.worker("b", STREAM_REC_WORKER_ID="twin").start()
    behavior_tps = {f"{pipeline.topic('behavior')}:{n}" for n in range(pipeline.partitions)}

    def b_owns_all() -> bool | None:
        st = b.status()
        mine = {t for t in (st or {}).get("assignment", []) if t in behavior_tps}
        return True if st and not st["rebalancing"] and mine == behavior_tps else None

    wait_for("the second worker to own every behavior partition", b_owns_all, 90)
    assert a.proc is not None
    try:
        a.proc.wait(60)
    except Exception:  # noqa: BLE001 - reported below
        pytest.fail(f"the fenced worker is still running:\n{a.tail()}")
    assert "was fenced and stops" in a.log.read_text(errors="replace"), a.tail()
    # The survivor keeps its partitions and serves; the fenced one took none back.
    pipeline.produce("behavior", [(f"t{n}".encode(), behavior(f"t{n}", "i1")) for n in range(40)])
    recs = pipeline.consume("recommendations", 40, timeout=60, settle=3.0)
    assert len({json.loads(r.value)["rec_id"] for r in recs}) == 40
    assert b_owns_all() and b.alive()
    print(f"\n[fence] fenced worker exit code {a.proc.returncode}")


@pytest.mark.timeout(180)
def test_a_static_member_restarted_after_sigkill_keeps_its_partitions(pipeline: Pipeline) -> None:
    # Two workers; one is killed and restarted at once: it takes its own partitions back with
    # no rebalance (the survivor never rejoins nor gives anything up) and serves them.
    pipeline.produce("items", items_messages(50))
    a = pipeline.worker("a").start()
    b = pipeline.worker("b").start()
    a.wait_ready(partitions=False)
    b.wait_ready(partitions=False)
    beh = pipeline.topic("behavior") + ":"

    def split(b: WorkerProc = b) -> tuple[set[str], set[str]] | None:
        sa, sb = a.status(), b.status()
        if not sa or not sb or sa["rebalancing"] or sb["rebalancing"]:
            return None
        pa = {t for t in sa["assignment"] if t.startswith(beh)}
        pb = {t for t in sb["assignment"] if t.startswith(beh)}
        return (pa, pb) if pa and pb and len(pa | pb) == pipeline.partitions else None

    pa, pb = wait_for("both workers to hold behavior partitions", split, 90)
    time.sleep(3.0)  # let the group settle: no join of the start-up still under way
    joins = a.log.read_text(errors="replace").count("(Re-)joining group")
    b.stop(signal.SIGKILL)
    t0 = time.monotonic()
    b2 = pipeline.worker("b").start()  # same data folder: the same membership id
    back = wait_for("the restarted worker's partitions", lambda: split(b2), 90, poll=0.2)
    took = time.monotonic() - t0
    assert back == (pa, pb), (back, pa, pb)
    msgs = [(f"s{n}".encode(), behavior(f"s{n}", "i2")) for n in range(40)]
    pipeline.produce("behavior", msgs)
    recs = pipeline.consume("recommendations", 40, timeout=60, settle=2.0)
    assert {r.key for r in recs} == {k for k, _ in msgs}
    assert "took back the assignment" in b2.log.read_text(errors="replace")
    # Dynamic membership would have rebalanced the survivor too (after the dead member's
    # session timeout); a static member's return leaves it alone.
    assert a.log.read_text(errors="replace").count("(Re-)joining group") == joins, a.tail()
    print(f"\n[static] restarted worker's status page showed its partitions {took:.1f}s after "
          "the kill, the survivor did not rebalance")  # fmt: skip
    assert b2.alive() and a.alive()
