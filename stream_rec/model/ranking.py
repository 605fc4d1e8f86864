"""The served score in torch: the two-tower product, its standardisation and the neighbour blend
(:mod:`stream_rec.model.neighbours`), and :class:`TorchRanker`, which ranks the catalogue with a
torch model as ONNX Runtime does at serving (validation, the trainer's gate, the eager
benchmark). The ONNX side is :func:`stream_rec.model.ort_graph.serving_graph`; tests check the
two equal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from stream_rec.model.neighbours import STANDARDISE_EPS, BlendParams
from stream_rec.model.net import TwoTower
from stream_rec.model.ort_graph import left_padded


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each row (last axis) to mean 0, standard deviation 1 over the catalogue: a layer norm
    without scale or shift, one kernel here and in ONNX Runtime."""
    return F.layer_norm(x, x.shape[-1:], eps=STANDARDISE_EPS)


def neighbour_parts(
    stacked: torch.Tensor, idx: np.ndarray, w: np.ndarray, n_items: int
) -> torch.Tensor:
    """[users, parts, n_items]: the history rows (:meth:`Neighbours.recent`) of the stacked
    neighbour matrices (:meth:`Neighbours.stacked`), weighted and summed."""
    rows = stacked[torch.from_numpy(idx)]  # [users, last, parts * n_items]
    return (torch.from_numpy(w).unsqueeze(1) @ rows).reshape(len(idx), -1, n_items)


def served_scores(
    raw: torch.Tensor,
    parts: torch.Tensor | None,
    weights: torch.Tensor,
    new: torch.Tensor,
    new_item_offset: float,
    offset_on: torch.Tensor | None = None,
) -> torch.Tensor:
    """The served score (:mod:`stream_rec.model.neighbours`): ``z(raw) + sum_k weights[k] *
    z(parts[:, k])``, where an item without interactions (``new``) has no co-occurrence or
    transition evidence at all (not evidence of none), so its neighbour parts are its two-tower
    part instead of the zeros the matrices hold (otherwise a new item would trail every warm
    item by the neighbour weights and never be shown: cold HR@10 0.0 on the 10 % cold split);
    then ``new_item_offset`` on new items, or on ``offset_on`` when given (the items without
    training interactions, when ``new`` also holds items whose interactions came after the
    neighbour fit) (:mod:`stream_rec.model.calibrate`). The ONNX
    runtime's serving graph (:func:`stream_rec.model.ort_graph.serving_graph`) computes the same.
    """
    base = standardise(raw)
    out = base
    if parts is not None and parts.shape[1]:
        z = torch.where(new, base.unsqueeze(1), standardise(parts))
        out = base + (z * weights.view(1, -1, 1)).sum(dim=1)
    if new_item_offset:
        on = new if offset_on is None else offset_on
        out = out + new_item_offset * on.to(out.dtype)
    return out


class TorchRanker:
    """Scores the catalogue with the torch model (validation and the eager benchmark)."""

    def __init__(self, model: TwoTower, max_len: int | None = None) -> None:
        self.model = model.eval()
        self.max_len = max_len or model.cfg.max_len
        with torch.no_grad():
            self.items = model.item_matrix()
            self.item_inputs = model.user.item_inputs(self.items)  # once, as serving does
        # The new-item offset goes to items without training interactions; the blend's own-part
        # rule also to items without neighbour statistics (interactions only since the fit, in
        # fine-tunes), as the ONNX runtime has it.
        self.text_only = (model.counts == 0).cpu().numpy()
        nb = model.neighbours
        self.new = self.text_only if nb is None else nb.own_part(self.text_only)
        self._new_t = torch.from_numpy(self.new)
        self._text_only_t = torch.from_numpy(self.text_only)
        self.blend = BlendParams.from_config(model.cfg.as_dict())
        mats, weights = nb.matrices(self.blend) if nb is not None else ([], [])
        self.stacked = torch.from_numpy(nb.stacked(mats, model.n_items)) if nb and mats else None
        self.weights = torch.tensor(weights, dtype=torch.float32)

    @torch.no_grad()
    def user_vectors(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        idx = torch.from_numpy(left_padded([list(h)[-self.max_len :] for h in histories], 1)).to(
            self.items.device
        )
        seq, mask = self.model.embed_sequences(idx, self.item_inputs)
        return self.model.user.last(seq, mask, normalised=True)

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        raw = (self.user_vectors(histories) @ self.items.T).cpu()
        parts = None
        if self.stacked is not None and self.model.neighbours is not None:
            idx, w = self.model.neighbours.recent(histories, self.blend.last, self.blend.decay)
            parts = neighbour_parts(self.stacked, idx, w, self.model.n_items)
        offset = self.model.cfg.new_item_offset
        out: np.ndarray = served_scores(
            raw, parts, self.weights, self._new_t, offset, self._text_only_t
        ).numpy()
        return out
