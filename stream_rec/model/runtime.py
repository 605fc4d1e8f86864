"""Serving-time scorer: ONNX Runtime user tower + exact top-K over the precomputed item matrix.

Implements :class:`stream_rec.serving.scorer.Scorer` without torch on the hot path. The score
agent calls :meth:`OnnxScorer.score` from a worker thread with a micro-batch; new catalogue items
arrive through :meth:`OnnxScorer.upsert_items` and are embedded from their text by the exported
text encoder + item head (cold start). Arrays are replaced, never mutated in place, so a reader
always sees one consistent catalogue.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from stream_rec.model import registry
from stream_rec.model.neighbours import STANDARDISE_EPS, BlendParams, Neighbours
from stream_rec.serving.rerank import HeadCache, RerankParams, pool_size, rerank
from stream_rec.serving.scorer import CatalogItem, ScoredItem, ScoreRequest
from stream_rec.settings import Settings

Precision = Literal["auto", "fp32", "int8", "fp16"]
REASON_WINDOW = 10


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
    what :func:`stream_rec.model.train.served_scores` computes in torch, in one ONNX Runtime
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
    tower_items: np.ndarray, items: np.ndarray, new: np.ndarray, offset: float
) -> dict[str, np.ndarray]:
    """The per-catalogue inputs of :func:`serving_graph`."""
    return {
        "tower_items": np.concatenate([tower_items, np.zeros_like(tower_items[:1])]),  # + pad
        "items_t": np.ascontiguousarray(items.T),
        "new": new,
        "bump": (offset * new).astype(np.float32),
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


def _session(model: Any, providers: list[str], threads: int) -> Any:
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


def _load_tower(path: Path, fp16: bool) -> tuple[Any | None, Any]:
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


class OnnxScorer:
    """The exported two-tower model as a :class:`~stream_rec.serving.scorer.Scorer`."""

    def __init__(
        self,
        version_dir: Path,
        settings: Settings | None = None,
        precision: Precision | None = None,
        threads: int = 0,
        verify: bool = True,
        max_history: int | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        self.dir = Path(version_dir)
        self.manifest = registry.verify(self.dir) if verify else registry.read_manifest(self.dir)
        device = settings.device if settings is not None else "auto"
        self.providers = choose_providers(device)
        on_gpu = self.providers[0] == "CUDAExecutionProvider"
        if precision is None:  # the worker's: STREAM_REC_PRECISION
            precision = settings.precision if settings is not None else "fp32"
        if precision == "auto":
            precision = "fp16" if on_gpu else "fp32"
        self.precision = precision
        fp16 = precision == "fp16" and on_gpu
        int8 = precision == "int8" and not on_gpu

        def model_file(name: str) -> Path:
            q = self.dir / f"{name}.int8.onnx"
            return q if int8 and q.is_file() else self.dir / f"{name}.onnx"

        item_side, self._tower = _load_tower(model_file("user_tower"), fp16)
        self._item_side = None
        if item_side is not None:
            self._item_side = _session(item_side.SerializeToString(), self.providers, threads)
        self.head_sess = _session(self.dir / "item_head.onnx", self.providers, threads)
        self._serve_sess: dict[tuple[int, int], Any] = {}
        self._text_sess: Any = None
        self._text_file = model_file("text_encoder")
        self._threads = threads
        cfg = json.loads((self.dir / "config.json").read_text(encoding="utf-8"))
        self.max_len = int(cfg["model"]["max_len"])
        self.text_dim = int(cfg["model"]["text_dim"])
        if max_history:
            self.max_len = min(self.max_len, max_history)
        elif settings is not None:
            self.max_len = min(self.max_len, settings.session_length)
        tok = Tokenizer.from_file(str(self.dir / "tokenizer" / "tokenizer.json"))
        tok.enable_truncation(max_length=int(cfg["max_text_tokens"]))
        tok.enable_padding(pad_id=int(cfg["pad_token_id"]))
        self.tokenizer = tok
        meta = json.loads((self.dir / "items.json").read_text(encoding="utf-8"))
        self._lock = threading.Lock()
        self.item_ids: list[str] = list(meta["item_ids"])
        self.titles: list[str] = list(meta["titles"])
        # Texts of the items embedded here (added from the stream); exported items keep their
        # trained vectors.
        self._texts: dict[str, str] = {}
        self.index = {iid: i for i, iid in enumerate(self.item_ids)}
        self.items = np.load(self.dir / "item_vectors.npy").astype(np.float32)
        self.id_part = np.load(self.dir / "id_part.npy").astype(np.float32)
        pop = np.load(self.dir / "popularity.npy").astype(np.float64)
        self.pop_score = np.log1p(pop).astype(np.float32)
        offset = settings.new_item_offset if settings is not None else None
        self.new_item_offset = float(
            cfg["model"].get("new_item_offset", 0.0) if offset is None else offset
        )
        self.neighbours = Neighbours.load(self.dir)
        self.rerank_params = RerankParams.from_settings(settings)
        self._head = HeadCache()
        self._norm_items, self._item_feeds = self._derived(self.items, self.id_part)
        self.set_blend(BlendParams.from_config(cfg["model"]))

    # --- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str, settings: Settings | None = None, **kwargs: Any) -> OnnxScorer:
        """Load a version folder, or the CURRENT (else newest) version of a registry root."""
        return cls(registry.resolve(Path(path)), settings, **kwargs)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    # --- catalogue -----------------------------------------------------------------------
    def _derived(
        self, items: np.ndarray, id_part: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """What each catalogue matrix brings along: unit rows (reasons) and the serving graph's
        per-catalogue inputs (:func:`serving_graph`): the rows the user tower reads (its item
        side, :func:`split_tower`, run here once instead of per request) plus a pad row, a
        contiguous transpose (the catalogue product reads it row by row), the new-item mask
        (rows without an ID part: no training interactions, or added from the stream) and the
        new-item offset as a row."""
        n = np.linalg.norm(items, axis=1, keepdims=True)
        unit = (items / np.maximum(n, 1e-12)).astype(np.float32)
        new: np.ndarray = np.logical_not(id_part.any(axis=1))
        tower_items = items
        if self._item_side is not None:
            tower_items = self._item_side.run(None, {"item_vectors": items[None]})[0][0]
        return unit, catalogue_inputs(tower_items, items, new, self.new_item_offset)

    def _text_session(self) -> Any:
        if self._text_sess is None:  # lazily: most workers only score
            self._text_sess = _session(self._text_file, self.providers, self._threads)
        return self._text_sess

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Text-path item vectors (what a brand-new item gets) for ``texts``."""
        out = [
            self.head_sess.run(None, {"text_vectors": tv})[0]
            for tv in self._encoded(texts, batch_size)
        ]
        dim = self.items.shape[1]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)

    def text_vectors(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The version's text encoder's output for ``texts`` (the model's ``text_vectors``:
        what a fine-tune gives an item added after the version was trained)."""
        out = list(self._encoded(texts, batch_size))
        return np.concatenate(out) if out else np.zeros((0, self.text_dim), np.float32)

    def _encoded(self, texts: Sequence[str], batch_size: int) -> Iterator[np.ndarray]:
        sess = self._text_session()
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer.encode_batch(list(texts[start : start + batch_size]))
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            tv = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            yield tv.astype(np.float32)

    def upsert_items(self, items: Iterable[CatalogItem]) -> None:
        """Embed new items (and items embedded here before whose text changed) from their text.

        Items the exported model already holds keep their trained vectors: re-embedding the
        whole catalogue on every start or model swap would cost seconds of encoder time per
        thousand items for nothing.
        """
        batch = [
            it
            for it in {it.item_id: it for it in items}.values()
            if it.item_id not in self.index
            or self._texts.get(it.item_id, it.embed_text) != it.embed_text
        ]
        if not batch:
            return
        vecs = self.embed_texts([it.embed_text for it in batch])
        with self._lock:
            ids, titles, index = list(self.item_ids), list(self.titles), dict(self.index)
            new = [it for it in batch if it.item_id not in index]
            n_old = len(ids)
            mat = np.concatenate(
                [self.items, np.zeros((len(new), self.items.shape[1]), np.float32)]
            )
            idp = np.concatenate([self.id_part, np.zeros_like(mat[n_old:])])
            pop = np.concatenate([self.pop_score, np.zeros(len(new), np.float32)])
            for it in new:
                index[it.item_id] = len(ids)
                ids.append(it.item_id)
                titles.append(it.title)
            texts = dict(self._texts)
            for it, v in zip(batch, vecs, strict=True):
                i = index[it.item_id]
                titles[i] = it.title
                mat[i] = v + idp[i]  # warm items keep their learned ID part
                texts[it.item_id] = it.embed_text
            self._texts = texts
            self.item_ids, self.titles, self.index = ids, titles, index
            self.items, self.id_part, self.pop_score = mat, idp, pop
            self._norm_items, self._item_feeds = self._derived(mat, idp)
            self._blend_feeds = self._blend_inputs(len(ids))

    def observe(self, user_id: str, history: Sequence[str], item_id: str, event: str) -> None:
        """Frozen model: learning happens in the trainer service, not here."""

    # --- scoring -------------------------------------------------------------------------
    def _snapshot(self) -> _Catalogue:
        with self._lock:
            return _Catalogue(
                self.items, self.item_ids, self.titles, self.index, self.pop_score,
                self._norm_items, self.blend, self._item_feeds, self._blend_feeds,
            )  # fmt: skip

    def set_blend(self, params: BlendParams) -> None:
        """The neighbour blend of the served score (at load: the version's config; off when
        the version has no neighbour matrices)."""
        nb = self.neighbours
        mats, weights = nb.matrices(params) if nb is not None and params.on else ([], [])
        blend = params if mats else BlendParams()
        self._serving_session(len(mats), blend.last)  # built here, not on the first call
        with self._lock:
            self.blend = blend
            self._mats = mats
            self._weights = np.asarray(weights, dtype=np.float32)
            self._blend_feeds = self._blend_inputs(len(self.item_ids))

    def _blend_inputs(self, n_items: int) -> dict[str, np.ndarray] | None:
        """The serving graph's blend inputs (None: no blend): the blend's matrices side by
        side with zero rows for items without one and for padding (index -1), the age weights
        and the part weights."""
        if not self._mats or self.neighbours is None:
            return None
        stacked = self.neighbours.stacked(self._mats, n_items, rows=n_items + 1)
        return blend_inputs(stacked, self.blend.last, self.blend.decay, self._weights)

    def score_matrix(
        self, histories: Sequence[Sequence[str]], cat: _Catalogue | None = None
    ) -> np.ndarray:
        """Served scores of every catalogue item for each raw-id history (empty =
        popularity)."""
        cat = cat or self._snapshot()
        get = cat.where.get
        idx = [[j for j in map(get, h) if j is not None][-self.max_len :] for h in histories]
        rows = [r for r, h in enumerate(idx) if h]
        if len(rows) == len(idx):  # the usual case: every user has a history
            return self._served(idx, cat)
        scores = np.tile(cat.pop, (len(idx), 1))
        if rows:
            scores[rows] = self._served([idx[r] for r in rows], cat)
        return scores

    def _serving_session(self, parts: int, last: int) -> Any:
        """The ORT session of :func:`serving_graph` with ``parts`` neighbour parts over the
        newest ``last`` items (one per graph shape, kept for the scorer's life)."""
        key = (parts, last if parts else 0)
        sess = self._serve_sess.get(key)
        if sess is None:
            graph = serving_graph(self._tower, *key)
            sess = _session(graph, self.providers, self._threads)
            self._serve_sess[key] = sess
        return sess

    def _served(self, idx: Sequence[Sequence[int]], cat: _Catalogue) -> np.ndarray:
        """Non-empty index histories → served scores, in one run of :func:`serving_graph`."""
        parts = 0 if cat.blend_feeds is None else len(cat.blend_feeds["weights"])
        last = cat.blend.last if parts else 0
        feeds = {"hist": left_padded(idx, last)} | cat.item_feeds | (cat.blend_feeds or {})
        scores: np.ndarray = self._serving_session(parts, last).run(None, feeds)[0]
        return scores

    def warm_up(self, sizes: Sequence[int] = (1, 8)) -> None:
        """Score a few requests of each batch size once before serving: a session's first
        runs of a shape allocate its buffers and cost tens of milliseconds, which the first
        events after a start or a swap would otherwise wait for."""
        if not self.item_ids:
            return
        for n in sizes:
            hist = self.item_ids[: max(1, min(n, len(self.item_ids)))]
            self.score([ScoreRequest("warm-up", hist[: i + 1]) for i in range(n)], 10)

    def score(self, requests: Sequence[ScoreRequest], k: int) -> list[list[ScoredItem]]:
        if not requests:
            return []
        cat = self._snapshot()  # one consistent catalogue even if upsert_items runs meanwhile
        scores = self.score_matrix([r.history for r in requests], cat)
        n = len(cat.ids)
        where = cat.where
        hists: list[list[int]] = []
        ban_rows: list[int] = []
        ban_cols: list[int] = []
        for row, req in enumerate(requests):
            if req.adjust:  # feedback signals, in units of this user's score spread
                s = scores[row]
                at = [(where[i], a) for i, a in req.adjust.items() if i in where]
                if at:
                    cols, by = zip(*at, strict=True)
                    s[np.asarray(cols)] += np.asarray(by, np.float32) * np.float32(s.std())
            hist = [where[i] for i in req.history if i in where]
            hists.append(hist)
            banned = [where[i] for i in req.exclude if i in where] + hist
            ban_rows.extend([row] * len(banned))
            ban_cols.extend(banned)
        if ban_cols:  # seen and excluded items of every row in one assignment
            scores[np.asarray(ban_rows), np.asarray(ban_cols, dtype=np.int64)] = -np.inf
        # Top k (the re-ranker's pool when it is on) of every row at once, best first, ties
        # by catalogue index.
        kk = pool_size(self.rerank_params, k, n)
        if 0 < kk < n:
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        else:
            top = np.tile(np.arange(kk), (len(requests), 1))
        by_row = np.arange(len(requests))[:, None]  # cheaper than take_along_axis
        vals = scores[by_row, top]
        order = np.lexsort((top, -vals), axis=1)
        top, vals = top[by_row, order], vals[by_row, order]
        if self.rerank_params.on:  # diversity and long tail (stream_rec.serving.rerank)
            top, vals, kk = self._rerank(top, vals, cat, k)
        finite = np.isfinite(vals)
        results: list[list[ScoredItem]] = []
        for row, hist in enumerate(hists):
            m = int(finite[row].argmin()) if not finite[row].all() else kk
            idx = top[row, :m]
            recent = hist[-REASON_WINDOW:]
            if recent and m:
                # the reason of each item: the recent item most like it (one product per row)
                sims = cat.norm[np.asarray(recent, dtype=np.int64)] @ cat.norm[idx].T
                best = sims.argmax(axis=0)
                reasons = [f"because you watched {cat.titles[recent[int(b)]]}" for b in best]
            else:
                reasons = ["popular now"] * m
            results.append(
                [
                    ScoredItem(cat.ids[int(j)], float(v), r)
                    for j, v, r in zip(idx, vals[row, :m], reasons, strict=True)
                ]
            )
        return results

    def _rerank(
        self, top: np.ndarray, vals: np.ndarray, cat: _Catalogue, k: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        pos = rerank(top, vals, cat.norm, self._head.get(cat.pop), k, self.rerank_params)
        by_row = np.arange(len(top))[:, None]
        return top[by_row, pos], vals[by_row, pos], pos.shape[1]

    def rerank_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """What the re-ranker reads of the catalogue, in catalogue order: unit item vectors and
        head weights (1 for the head, :func:`~stream_rec.serving.rerank.head_items`)."""
        cat = self._snapshot()
        return cat.norm, self._head.get(cat.pop)


class _Catalogue(NamedTuple):
    items: np.ndarray
    ids: list[str]
    titles: list[str]
    where: dict[str, int]
    pop: np.ndarray
    norm: np.ndarray
    blend: BlendParams
    item_feeds: dict[str, np.ndarray]
    blend_feeds: dict[str, np.ndarray] | None
