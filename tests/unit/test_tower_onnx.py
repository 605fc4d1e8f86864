"""The hand-written ONNX user tower (:mod:`stream_rec.model.tower_onnx`) computes what torch
does."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from stream_rec.model.net import ModelConfig, UserTower
from stream_rec.model.tower_onnx import user_tower_graph


def _tower(layers: int, heads: int, seed: int = 0) -> UserTower:
    torch.manual_seed(seed)
    tower = UserTower(ModelConfig(dim=16, layers=layers, heads=heads, max_len=8, dropout=0.0))
    with torch.no_grad():  # trained-looking weights: biases and norms away from 0 / 1
        for p in tower.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return tower.eval()


def _histories(t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded histories: full, padded to different lengths, a single item."""
    g = torch.Generator().manual_seed(seed)
    seq, mask = torch.randn(5, t, 16, generator=g), torch.ones(5, t)
    for row, pad in enumerate([0, 2, t // 2, t - 1, 0]):
        mask[row, :pad] = 0.0
        seq[row, :pad] = 0.0
    return seq, mask


def _run(tower: UserTower, seq: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    graph = user_tower_graph(tower).SerializeToString()
    sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    out: np.ndarray = sess.run(None, {"item_vectors": seq.numpy(), "mask": mask.numpy()})[0]
    return out


@pytest.mark.parametrize(("layers", "heads"), [(1, 2), (2, 2), (3, 4), (2, 1)])
@pytest.mark.parametrize("t", [3, 8, 12])  # shorter than, equal to and longer than max_len
def test_onnx_tower_equals_torch(layers: int, heads: int, t: int) -> None:
    tower = _tower(layers, heads)
    seq, mask = _histories(t, seed=layers * 10 + t)
    with torch.no_grad():
        want = tower.last(seq, mask).numpy()
    got = _run(tower, seq, mask)
    assert got.shape == (5, 16)
    assert np.abs(got - want).max() <= 1e-5


def test_padding_slots_are_never_read() -> None:
    """The serving graph leaves padding slots holding some item's vector; the tower must give
    the same user vector whatever they hold, in torch and in ONNX."""
    tower = _tower(2, 2, seed=3)
    seq, mask = _histories(8, seed=4)
    junk = seq.clone()
    junk[mask == 0] = 5.0 * torch.randn(int((mask == 0).sum()), 16)
    with torch.no_grad():
        torch.testing.assert_close(tower.last(junk, mask), tower.last(seq, mask))
    np.testing.assert_allclose(_run(tower, junk, mask), _run(tower, seq, mask), atol=1e-6)


def test_the_graph_uses_the_fused_attention_of_onnx_runtime() -> None:
    graph = user_tower_graph(_tower(3, 2))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Attention") == 2  # every block but the last
    assert ops.count("BiasGelu") == 3
    assert {i.name for i in graph.graph.input} == {"item_vectors", "mask"}
    assert [o.name for o in graph.graph.output] == ["user_vector"]


def test_the_runtime_cuts_the_tower_where_items_are_read_alone() -> None:
    """The item side, run once over the catalogue, then the user side on the gathered rows,
    give the whole tower's user vector."""
    from stream_rec.model.ort_graph import split_tower

    tower = _tower(2, 2, seed=5)
    items = torch.randn(9, 16)
    hist = torch.tensor([[3, 1, 4, 1, 5, 8, 2, 6], [0, 0, 0, 0, 0, 7, 8, 2]])
    mask = torch.ones(2, 8)
    mask[1, :5] = 0.0
    item_side, user_side = split_tower(user_tower_graph(tower))
    assert item_side is not None
    run = ort.InferenceSession(item_side.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = run.run(None, {"item_vectors": items[None].numpy()})[0][0]
    user = ort.InferenceSession(user_side.SerializeToString(), providers=["CPUExecutionProvider"])
    got = user.run(None, {"item_inputs": rows[hist.numpy()], "mask": mask.numpy()})[0]
    with torch.no_grad():
        want = tower.last(items[hist], mask).numpy()
    assert np.abs(got - want).max() <= 1e-5


def test_a_tower_without_the_named_item_inputs_is_served_whole() -> None:
    from stream_rec.model.ort_graph import split_tower

    graph = user_tower_graph(_tower(1, 2))
    for node in graph.graph.node:  # as a tower exported before the value had its name
        node.output[:] = ["renamed" if o == "item_inputs" else o for o in node.output]
        node.input[:] = ["renamed" if i == "item_inputs" else i for i in node.input]
    item_side, whole = split_tower(graph)
    assert item_side is None and whole is graph
