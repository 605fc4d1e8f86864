"""Serving-time scorer: ONNX Runtime user tower + exact top-K over the precomputed item matrix.

Implements :class:`stream_rec.serving.scorer.Scorer` without torch on the hot path. The score
agent calls :meth:`OnnxScorer.score` from a worker thread with a micro-batch; new catalogue items
arrive through :meth:`OnnxScorer.upsert_items` and are embedded from their text by the exported
text encoder + item head (cold start). Arrays are replaced, never mutated in place, so a reader
always sees one consistent catalogue. The ONNX Runtime plumbing it builds on (providers,
sessions, the served-score graph, the user tower's two sides) is in
:mod:`stream_rec.model.ort_graph`; the same score in torch is :mod:`stream_rec.model.ranking`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from stream_rec.model import registry
from stream_rec.model.neighbours import BlendParams, Neighbours
from stream_rec.model.ort_graph import (
    blend_inputs,
    catalogue_inputs,
    choose_providers,
    left_padded,
    load_tower,
    serving_graph,
    session,
)
from stream_rec.serving.rerank import HeadCache, RerankParams, pool_size, rerank
from stream_rec.serving.scorer import CatalogItem, ScoredItem, ScoreRequest
from stream_rec.settings import Settings

Precision = Literal["auto", "fp32", "int8", "fp16"]
REASON_WINDOW = 10


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
        device = settings.model.device if settings is not None else "auto"
        self.providers = choose_providers(device)
        on_gpu = self.providers[0] == "CUDAExecutionProvider"
        if precision is None:  # the worker's: STREAM_REC_PRECISION
            precision = settings.model.precision if settings is not None else "fp32"
        if precision == "auto":
            precision = "fp16" if on_gpu else "fp32"
        self.precision = precision
        fp16 = precision == "fp16" and on_gpu
        int8 = precision == "int8" and not on_gpu

        def model_file(name: str) -> Path:
            q = self.dir / f"{name}.int8.onnx"
            return q if int8 and q.is_file() else self.dir / f"{name}.onnx"

        item_side, self._tower = load_tower(model_file("user_tower"), fp16)
        self._item_side = None
        if item_side is not None:
            self._item_side = session(item_side.SerializeToString(), self.providers, threads)
        self.head_sess = session(self.dir / "item_head.onnx", self.providers, threads)
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
            self.max_len = min(self.max_len, settings.serving.session_length)
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
        offset = settings.model.new_item_offset if settings is not None else None
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
        (rows without an ID part: no training interactions, or added from the stream; and rows
        without neighbour statistics) and the new-item offset (on the rows without an ID
        part) as a row."""
        n = np.linalg.norm(items, axis=1, keepdims=True)
        unit = (items / np.maximum(n, 1e-12)).astype(np.float32)
        text_only: np.ndarray = np.logical_not(id_part.any(axis=1))
        nb = self.neighbours
        new = text_only if nb is None else nb.own_part(text_only)
        tower_items = items
        if self._item_side is not None:
            tower_items = self._item_side.run(None, {"item_vectors": items[None]})[0][0]
        return unit, catalogue_inputs(
            tower_items, items, new, self.new_item_offset, offset_on=text_only
        )

    def _textsession(self) -> Any:
        if self._text_sess is None:  # lazily: most workers only score
            self._text_sess = session(self._text_file, self.providers, self._threads)
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
        sess = self._textsession()
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
        self._servingsession(len(mats), blend.last)  # built here, not on the first call
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

    def _servingsession(self, parts: int, last: int) -> Any:
        """The ORT session of :func:`serving_graph` with ``parts`` neighbour parts over the
        newest ``last`` items (one per graph shape, kept for the scorer's life)."""
        key = (parts, last if parts else 0)
        sess = self._serve_sess.get(key)
        if sess is None:
            graph = serving_graph(self._tower, *key)
            sess = session(graph, self.providers, self._threads)
            self._serve_sess[key] = sess
        return sess

    def _served(self, idx: Sequence[Sequence[int]], cat: _Catalogue) -> np.ndarray:
        """Non-empty index histories → served scores, in one run of :func:`serving_graph`."""
        parts = 0 if cat.blend_feeds is None else len(cat.blend_feeds["weights"])
        last = cat.blend.last if parts else 0
        feeds = {"hist": left_padded(idx, last)} | cat.item_feeds | (cat.blend_feeds or {})
        scores: np.ndarray = self._servingsession(parts, last).run(None, feeds)[0]
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
