"""ONNX Runtime plumbing of the served model: device and providers, sessions, and the graphs a
version's files become at load time (the served-score graph, the user tower cut in two).

What :class:`stream_rec.model.runtime.OnnxScorer` builds on; plain functions, no scorer state.
Serving never imports torch through here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from stream_rec.model.neighbours import STANDARDISE_EPS


@functools.cache
def cuda_available() -> bool:
    """CUDA only when a device is really there (the GPU wheel lists the provider regardless).
    Asked once per process: the first answer imports torch, seconds of CPU."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # serving images may ship without torch
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers() and (
            ort.get_device() == "GPU"
        )


def choose_providers(device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" or (device == "auto" and cuda_available()):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def prewarm(device: str) -> None:
    """Everything loading a version imports (ONNX Runtime, onnx, tokenizers; torch where it
    decides the device), imported now: a worker serving the fallback calls this at start, as
    the same imports at its first model's swap held the interpreter for seconds (onnx alone
    ~1 s) while events waited."""
    import onnx.utils  # noqa: F401
    import onnxruntime  # noqa: F401
    import tokenizers  # noqa: F401

    choose_providers(device)


TOWER_PREFIX = "tower/"
ITEM_INPUTS = "item_inputs"
"""The user tower's value holding :meth:`UserTower.item_inputs` of each history slot (named so
by :mod:`stream_rec.model.tower_onnx`): everything before it depends on the item alone, so the
runtime computes it once per catalogue (:func:`split_tower`). Defined here, where serving
reads it, so serving never imports the torch side."""


def serving_graph(tower: Any, parts: int, last: int = 1) -> bytes:
    """The served score as one ONNX graph, from item-index histories to catalogue scores: the
    gather of the history's rows of ``tower_items``, the user ``tower`` (an ONNX model with
    inputs those rows [B, T, D] and ``mask`` [B, T] → ``user_vector`` [B, D], embedded whole:
    the user side of :func:`split_tower`, or a whole tower on item vectors), the product with
    the item matrix, the per-user standardisation, the ``parts`` neighbour parts (the rows of
    the newest ``last`` history items gathered from the stacked matrices, weighted by age and
    summed, standardised; a new item's part is its two-tower part) and the new-item offset —
    what :func:`stream_rec.model.ranking.served_scores` computes in torch, in one ONNX Runtime
    run. One run instead of a tower run plus numpy around it: at batch 32 on 2 vCPUs the numpy
    gathers, the rows of the newest items and the second run took about a fifth of the time.
    Whatever depends on the catalogue alone comes in ready (:func:`catalogue_inputs`,
    :func:`blend_inputs`), so each run holds only the operators its histories need.

    Inputs: ``hist`` [B, T] int64 (left padded with -1, T ≥ ``last``); per catalogue of N
    items: ``tower_items`` [N + 1, D] (what the tower's first input holds for each item; the
    last row stands in for padding, which the gather reaches at index -1), ``items_t`` [D, N]
    (the item vectors), ``new`` [N] bool, ``bump`` [N] (the new-item offset on new items, 0
    elsewhere) and ``ones`` [N]; with parts: ``stacked`` [N + 1, parts * N] (an item without
    a row in the neighbour fit, and padding at -1, have zeros), ``age_w`` [1, last] (the
    weight of each of the newest ``last`` positions, oldest first), ``weights`` [parts, 1]
    and ``w_sum`` [1] (their sum). Output: ``scores`` [B, N]."""
    from onnx import TensorProto, compose, helper

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    tower = compose.add_prefix(tower, TOWER_PREFIX)
    (t_out,) = [o.name for o in tower.graph.output]
    nodes: list[Any] = []
    inits = [helper.make_tensor("zero_i", i64, [], [0])]

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def standardise(x: str) -> str:  # a layer norm without scale or shift, as in torch
        return node("LayerNormalization", [x, "ones"], f"{x}_z", axis=-1, epsilon=STANDARDISE_EPS)

    def value(name: str, elem: int, shape: list[Any]) -> Any:
        return helper.make_tensor_value_info(name, elem, shape)

    inputs = [
        value("hist", i64, ["batch", "hist_len"]),
        value("tower_items", f32, ["items_and_pad", "dim"]),
        value("items_t", f32, ["dim", "items"]),
        value("new", TensorProto.BOOL, ["items"]),
        value("bump", f32, ["items"]),
        value("ones", f32, ["items"]),
    ]
    # the tower's inputs: the history's rows and its mask (a padding slot holds the pad row:
    # the tower zeroes every padding position itself before anything reads it)
    (rows_in,) = [i.name for i in tower.graph.input if i.name != f"{TOWER_PREFIX}mask"]
    real = node("GreaterOrEqual", ["hist", "zero_i"], "real")
    node("Cast", [real], f"{TOWER_PREFIX}mask", to=f32)
    node("Gather", ["tower_items", "hist"], rows_in, axis=0)
    nodes.extend(tower.graph.node)
    base = standardise(node("MatMul", [t_out, "items_t"], "raw"))
    out = base
    if parts:
        inputs += [
            value("stacked", f32, ["items_and_pad", "parts_items"]),
            value("age_w", f32, [1, last]),
            value("weights", f32, [parts, 1]),
            value("w_sum", f32, [1]),
        ]
        inits += [
            helper.make_tensor("shape3", i64, [3], [0, parts, -1]),
            helper.make_tensor("tail_start", i64, [1], [-last]),
            helper.make_tensor("tail_end", i64, [1], [2**62]),
            helper.make_tensor("ax1", i64, [1], [1]),
        ]
        # the rows of the newest `last` items, weighted by age and summed
        tail = node("Slice", ["hist", "tail_start", "tail_end", "ax1"], "tail")
        rows = node("Gather", ["stacked", tail], "rows", axis=0)  # [B, last, parts * N]
        near = node("MatMul", ["age_w", rows], "near")  # [B, 1, parts * N]
        z = standardise(node("Reshape", [near, "shape3"], "near3"))  # [B, parts, N]
        blend = node("ReduceSum", [node("Mul", [z, "weights"], "zw"), "ax1"], "blend0", keepdims=0)
        # a new item's parts are its two-tower part: sum(weights) * base
        own = node("Mul", [base, "w_sum"], "own")
        out = node("Add", [base, node("Where", ["new", own, blend], "blend")], "blended")
    node("Add", [out, "bump"], "scores")
    graph = helper.make_graph(
        nodes,
        "served_scores",
        inputs,
        [value("scores", f32, ["batch", "items"])],
        inits + list(tower.graph.initializer),
    )
    model = helper.make_model(graph, opset_imports=list(tower.opset_import))
    model.ir_version = tower.ir_version
    return bytes(model.SerializeToString())


def catalogue_inputs(
    tower_items: np.ndarray,
    items: np.ndarray,
    new: np.ndarray,
    offset: float,
    offset_on: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The per-catalogue inputs of :func:`serving_graph`: ``new`` marks the items whose
    neighbour parts are their own two-tower part, ``offset_on`` (default ``new``) those that
    get the new-item offset."""
    return {
        "tower_items": np.concatenate([tower_items, np.zeros_like(tower_items[:1])]),  # + pad
        "items_t": np.ascontiguousarray(items.T),
        "new": new,
        "bump": (offset * (new if offset_on is None else offset_on)).astype(np.float32),
        "ones": np.ones(len(items), np.float32),
    }


def blend_inputs(
    stacked: np.ndarray, last: int, decay: float, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """The blend inputs of :func:`serving_graph` (``stacked`` with its zero rows)."""
    w = np.asarray(weights, dtype=np.float32)
    return {
        "stacked": stacked,
        "age_w": (decay ** np.arange(last - 1, -1, -1, dtype=np.float32))[None],
        "weights": w[:, None],
        "w_sum": w.sum(keepdims=True),
    }


def left_padded(idx: Sequence[Sequence[int]], width: int = 0) -> np.ndarray:
    """Index histories as one [B, max(longest, width)] int64 array, left padded with -1."""
    lens = np.fromiter(map(len, idx), np.int64, len(idx))
    width = max(int(lens.max(initial=0)), width)
    hist = np.full((len(idx), width), -1, dtype=np.int64)
    hist[np.arange(width) >= width - lens[:, None]] = np.fromiter(
        chain.from_iterable(idx), np.int64, int(lens.sum())
    )
    return hist


def session(model: Any, providers: list[str], threads: int) -> Any:
    """An ORT session of ``model`` (a file path or serialised model bytes)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    # Pool threads busy-wait for the next operator while a run is on (a sleeping thread takes
    # tens of microseconds to wake, per operator), and stop the moment the run returns: between
    # runs the cores belong to the event loop and other workers.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), opts, providers=providers
    )


def split_tower(tower: Any) -> tuple[Any | None, Any]:
    """The user tower (ONNX) cut where it has read each history slot's item on its own
    (:data:`ITEM_INPUTS`): (item side ``item_vectors`` →
    ``item_inputs``, run once per catalogue; user side ``item_inputs``, ``mask`` →
    ``user_vector``, run per request). A tower without that value (exported before it had a
    name) is not cut: (None, the tower)."""
    from onnx.utils import Extractor

    if not any(ITEM_INPUTS in n.output for n in tower.graph.node):
        return None, tower
    ex = Extractor(tower)
    item_side = ex.extract_model(["item_vectors"], [ITEM_INPUTS])
    user_side = ex.extract_model([ITEM_INPUTS, "mask"], ["user_vector"])
    return item_side, user_side


def load_tower(path: Path, fp16: bool) -> tuple[Any | None, Any]:
    """The user tower's two sides (:func:`split_tower`) as ONNX models, fp16 inside and fp32
    at their edges when asked."""
    import onnx

    sides = split_tower(onnx.load(str(path)))
    if fp16:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        sides = tuple(  # type: ignore[assignment]
            None if m is None else convert_float_to_float16(m, keep_io_types=True) for m in sides
        )
    return sides
