"""The trainer's decisions on a tiny real model: promote, reject a regression, skip bad data."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from stream_rec.settings import load_settings
from stream_rec.training.service import Trainer, ndcg_at_k
from stream_rec.training.windows import Windower
from tests.model_fixtures import (
    N_ITEMS,
    build_tiny_encoder,
    export_planted,
    planted_dataset,
    planted_text_vectors,
    train_planted,
)


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("trainer")
    enc = build_tiny_encoder(tmp / "enc")
    ds = planted_dataset()
    trained = train_planted(ds, planted_text_vectors(enc, ds))
    root = tmp / "registry"
    export_planted(trained, enc, ds, root)
    return root


@pytest.fixture
def registry_root(registry_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    shutil.copytree(registry_template, root)
    return root


def walk(start: int, n: int) -> list[str]:
    return [str((start + t) % N_ITEMS + 1) for t in range(n)]


def ex(history: list[str], item: str, ts: float, label: int = 1) -> dict[str, object]:
    # one user per example (by time): the leak guard only drops a user's own held-out pairs
    return {"user_id": f"u{ts}", "history": history, "item_id": item, "label": label, "ts": ts}


def current(root: Path) -> str:
    return (root / "CURRENT").read_text().strip()


def test_a_fine_tune_that_regresses_on_held_out_feedback_is_rejected(registry_root: Path) -> None:
    settings = load_settings(
        model_path=registry_root, promote_tolerance=0.0, finetune_epochs=20, finetune_lr=0.05
    )
    before = current(registry_root)
    rng = random.Random(1)
    # Training part: clicks on items 20-22 whatever the history; held-out (newest 20 %): the
    # planted walk the serving model already ranks well. Fitting the first hurts the second.
    examples = [
        ex(walk(rng.randrange(N_ITEMS), 5), str(rng.choice([20, 21, 22])), t) for t in range(160)
    ]
    examples += [ex(walk(s, 5), walk(s, 6)[-1], 1000 + s) for s in range(40)]
    out = Trainer(settings, registry_root).run({"examples": examples})
    assert out.outcome == "rejected", out
    assert out.detail["gate_new"] < out.detail["gate_base"]
    assert current(registry_root) == before
    assert len(list((registry_root / "versions").iterdir())) == 1  # nothing half-written left


@pytest.mark.parametrize("shadow_share", [0.0, 0.2])
def test_feedback_consistent_with_held_out_is_promoted(
    registry_root: Path, shadow_share: float
) -> None:
    """Promoted at once with the shadow check off; with it on, a candidate: written to the
    registry but not current until the check (training.service.shadow_check) promotes it."""
    settings = load_settings(
        model_path=registry_root, promote_tolerance=0.05, finetune_epochs=3,
        shadow_share=shadow_share,
    )  # fmt: skip
    before = current(registry_root)
    examples = [ex(walk(s % N_ITEMS, 5), walk(s % N_ITEMS, 6)[-1], s) for s in range(120)]
    trainer = Trainer(settings, registry_root)
    out = trainer.run({"examples": examples})
    if shadow_share:
        assert out.outcome == "candidate" and out.folder is not None, out
        assert out.folder.name == out.version and current(registry_root) == before
        trainer.make_current(out.folder, out.detail)
    else:
        assert out.outcome == "promoted", out
    assert out.version and current(registry_root) == out.version != before
    manifest = json.loads((registry_root / "versions" / out.version / "manifest.json").read_text())
    assert manifest["parent"] == before


def test_the_gate_holds_out_behaviour_not_clicks_on_recommendations(registry_root: Path) -> None:
    """Clicks on recommended items would make a self-reinforcing gate: when the window holds
    behaviour examples (what users really did next), the newest of those are held out."""
    settings = load_settings(model_path=registry_root, promote_tolerance=0.0, finetune_epochs=1)
    clicks = [ex(walk(s, 5), walk(s, 6)[-1], 500 + s) for s in range(40)]  # the newest
    behaviour = [{**ex(walk(s, 5), walk(s, 6)[-1], s), "source": "behavior"} for s in range(50)]
    out = Trainer(settings, registry_root).run({"examples": clicks + behaviour})
    assert out.outcome in {"candidate", "rejected"}, out  # a candidate: the shadow check next
    assert out.detail["held_out"] == 10  # 20 % of the 50 behaviour examples, not of all 90
    assert out.detail["positives"] == 90


def test_no_user_item_pair_is_both_trained_on_and_held_out(registry_root: Path) -> None:
    """A simulated click names an item from the user's future: the same user's held-out
    behaviour example with that item as target must not be in the training part too."""
    settings = load_settings(model_path=registry_root, promote_tolerance=0.0, finetune_epochs=1)

    def user_ex(user: str, s: int, ts: float, source: str) -> dict[str, object]:
        return {**ex(walk(s, 5), walk(s, 6)[-1], ts), "user_id": user, "source": source}

    behaviour = [user_ex(f"u{s}", s, s, "behavior") for s in range(50)]
    # clicks, older than the held-out behaviour, on the held-out targets of users u40..u49
    leaks = [user_ex(f"u{s}", s, 0.5, "feedback") for s in range(40, 50)]
    other = [user_ex("someone-else", s, 0.5, "feedback") for s in range(40, 50)]
    out = Trainer(settings, registry_root).run({"examples": behaviour + leaks + other})
    assert out.detail["held_out"] == 10, out
    assert out.detail["trained"] == 40 + 10  # u0..u39's behaviour + another user's clicks


def test_bad_data_is_skipped_and_changes_nothing(registry_root: Path) -> None:
    settings = load_settings(model_path=registry_root)
    before = current(registry_root)
    unknown = [ex([], f"nope-{n}", n) for n in range(50)]
    assert Trainer(settings, registry_root).run({"examples": unknown}).outcome == "skipped"
    negatives = [ex(walk(n, 4), "3", n, label=0) for n in range(50)]
    assert Trainer(settings, registry_root).run({"examples": negatives}).outcome == "skipped"
    assert Trainer(settings, registry_root).run({}).outcome == "skipped"
    assert current(registry_root) == before


def test_ndcg_excludes_history() -> None:
    import math

    import numpy as np

    scores = np.array([[5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    # user 0: item 0 is history, so target 2 ranks 2nd (1/log2 3); user 1: target 0 is last
    assert ndcg_at_k(scores, [[0], []], [2, 0], k=2) == pytest.approx(0.5 / math.log2(3))


def test_gate_ndcg_breaks_ties_like_the_offline_protocol() -> None:
    import math

    import numpy as np

    from stream_rec.eval.protocol import metrics_from_ranks, target_ranks

    # every item scores the same: the target ranks behind the lower-index items, as in eval
    scores = np.ones((2, 4))
    targets = [2, 0]
    ranks = target_ranks(scores, np.array(targets))
    assert ranks.tolist() == [2, 0]
    want = (1 / math.log2(4) + 1.0) / 2
    assert ndcg_at_k(scores, [[], []], targets) == pytest.approx(want)
    assert ndcg_at_k(scores, [[], []], targets) == pytest.approx(metrics_from_ranks(ranks).ndcg10)
    # a repeated item: the target itself in the history is not excluded
    assert ndcg_at_k(scores, [[2, 0], []], targets) == pytest.approx((1 / math.log2(3) + 1) / 2)


def test_windows_close_by_count_and_time_and_merge_small_ones() -> None:
    w = Windower(seconds=10, max_examples=3, min_examples=2)
    assert w.add({"user_id": "a"}, 0) is None
    assert w.tick(11) is None  # too small at its deadline: merges forward
    assert w.add({"user_id": "b"}, 12) is None
    closed = w.tick(22)
    assert closed is not None and len(closed.examples) == 2 and closed.merged == 1
    for n in range(2):
        assert w.add({"user_id": f"c{n}"}, 30) is None
    closed = w.add({"user_id": "c2"}, 30)
    assert closed is not None and len(closed.examples) == 3
    w.add({"user_id": "x"}, 40)
    w.add({"user_id": "y"}, 40)
    assert w.forget("x") == 1 and w.pending() == 1


def test_items_added_after_the_version_get_rows_in_the_fine_tune(registry_root: Path) -> None:
    """Catalogue growth: items that reached the catalogue after the serving version get rows
    in the fine-tune: their text vectors from the version's own encoder, an ID vector learnt
    from the window's interactions (none without), the window's evidence; the ONNX scorer of
    the candidate holds them as trained items and ranks the one the window taught higher than
    the serving version, which knows it from its text alone."""
    import numpy as np

    from stream_rec.data.frame import Item
    from stream_rec.model import registry
    from stream_rec.model.export import load_torch_model
    from stream_rec.model.runtime import OnnxScorer
    from stream_rec.serving.scorer import CatalogItem

    settings = load_settings(
        model_path=registry_root, promote_tolerance=1.0, finetune_epochs=8, finetune_lr=0.02,
        shadow_share=0.0,
    )  # fmt: skip
    base_dir = registry.resolve(registry_root)
    base_ids = json.loads((base_dir / "items.json").read_text())["item_ids"]
    taught = Item("n1", "Orbit", "a quiet film about a long voyage to the outer planets")
    untouched = Item("n2", "Harvest", "a farming family through one hard summer")
    # 60 users go on from item 5's neighbourhood to the new item n1; n2 is never seen
    examples = [ex(walk(5 + s % 3, 4), "n1", s) for s in range(60)]
    examples += [ex(walk(s % N_ITEMS, 5), walk(s % N_ITEMS, 6)[-1], 100 + s) for s in range(60)]
    catalog = {taught.item_id: taught, untouched.item_id: untouched}
    out = Trainer(settings, registry_root).run({"examples": examples}, catalog)
    assert out.outcome == "promoted", out
    assert out.detail["items_added"] == 2
    new_dir = registry.resolve(registry_root, out.version)
    assert json.loads((new_dir / "items.json").read_text())["item_ids"] == [*base_ids, "n1", "n2"]
    model = load_torch_model(new_dir)
    n = len(base_ids)
    assert model.n_items == n + 2
    assert model.counts[n] > 0 and model.counts[n + 1] == 0  # the window's evidence
    ids = model.item.id_emb.weight.detach()
    assert ids[n].abs().sum() > 0 and ids[n + 1].abs().sum() == 0  # learnt only with evidence
    encoder = OnnxScorer(base_dir, settings, verify=False)
    want = encoder.text_vectors([taught.text, untouched.text])
    assert np.allclose(model.text_vectors[n:].numpy(), want, atol=1e-5)

    def rank_of_n1(version_dir: Path) -> int:
        sc = OnnxScorer(version_dir, settings)
        sc.upsert_items([CatalogItem(i.item_id, i.title, i.text) for i in (taught, untouched)])
        ranks = []
        for s in range(3):
            scores = sc.score_matrix([walk(5 + s, 4)])[0]
            ranks.append(int((scores > scores[sc.index["n1"]]).sum()))
        return sum(ranks)

    assert rank_of_n1(new_dir) < rank_of_n1(base_dir)
