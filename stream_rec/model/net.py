"""The two towers: item tower (text head + evidence-gated ID vector) and user (session) tower.

Score f(x, y) = softmax over the catalogue of dot(u(x), v(y)).

* Item tower ``v(y) = head(text(y)) + g(y) * id(y)`` with ``g = n / (n + c)``, ``n`` = training
  interactions of the item. A new item has ``n = 0``, so it is scored from its text alone; during
  training a random share of items is treated as cold (``g = 0``) so the text path stays strong
  enough to compete with warm items instead of being drowned by their ID vectors.
* User tower: a SASRec-style causal transformer over the item vectors of the user's recent items
  (left padded, positions counted back from the newest item, so any window length ≤ ``max_len``
  gives the same answer). Trained on every position with full-softmax cross-entropy.

Everything here is export-friendly (no nested tensors, finite masks for fp16).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from stream_rec.model.neighbours import Neighbours

MASK_VALUE = -1.0e4  # finite: an all-masked (padding) row stays NaN-free, also in fp16


@dataclass
class ModelConfig:
    text_dim: int = 384
    dim: int = 64
    head_hidden: int = 256
    layers: int = 2
    heads: int = 2
    max_len: int = 200
    dropout: float = 0.2
    gate_c: float = 5.0
    use_id: bool = True
    use_text: bool = True
    knn_last: int = 0
    knn_decay: float = 1.0
    knn_weight: float = 0.0
    trans_weight: float = 0.0
    """Blend of item neighbours over the last ``knn_last`` items, each older one weighted
    ``knn_decay`` times the next: co-occurrence ``knn_weight``, transitions ``trans_weight``
    (:mod:`neighbours`); 0 = off."""
    new_item_offset: float = 0.0
    """Added to the score of every item without training interactions (fitted on validation,
    see :mod:`stream_rec.model.calibrate`); 0 = none."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class TextHead(nn.Module):
    """Trainable projection of frozen text vectors: linear + residual MLP."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.lin = nn.Linear(cfg.text_dim, cfg.dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.head_hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.head_hidden, cfg.dim),
        )
        self.enabled = cfg.use_text

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        out = self.lin(text) + self.mlp(text)
        return out if self.enabled else out * 0.0


class ItemTower(nn.Module):
    def __init__(self, cfg: ModelConfig, n_items: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = TextHead(cfg)
        self.id_emb = nn.Embedding(n_items, cfg.dim)
        nn.init.normal_(self.id_emb.weight, std=0.02)

    def gate(self, counts: torch.Tensor) -> torch.Tensor:
        if not self.cfg.use_id:
            return torch.zeros_like(counts)
        if not self.cfg.use_text:
            return torch.ones_like(counts)
        return counts / (counts + self.cfg.gate_c)

    def forward(
        self, text: torch.Tensor, counts: torch.Tensor, cold_drop: float = 0.0
    ) -> torch.Tensor:
        g = self.gate(counts)
        if cold_drop > 0.0 and self.training:
            g = g * (torch.rand_like(g) >= cold_drop).to(g.dtype)
        return self.head(text) + g.unsqueeze(-1) * self.id_emb.weight


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 4 * dim)
        self.ff2 = nn.Linear(4 * dim, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.attn_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``last_only``: the output at the newest position alone ([B, 1, D]), see
        :meth:`last_position`."""
        if last_only:
            return self.last_position(x, bias)
        b, n, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q = q.reshape(b, n, h, d // h).transpose(1, 2)
        k = k.reshape(b, n, h, d // h).transpose(1, 2)
        v = v.reshape(b, n, h, d // h).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d // h)) + bias
        att = self.attn_drop(torch.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.out(y))
        return x + self.drop(self.ff2(self.act(self.ff1(self.ln2(x)))))

    def last_position(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """The block's output at the newest position alone ([B, 1, D]), attending over every
        position as :meth:`forward` does. With one query, no position needs its own key or
        value: the query is taken back into the input space instead, ``q · (W_k h_j + b_k) =
        (W_kᵀ q) · h_j + q · b_k`` (the second term is the same for every j and cancels in the
        softmax), and the value projection follows the attention-weighted sum, ``Σ_j a_j (W_v
        h_j + b_v) = W_v (Σ_j a_j h_j) + b_v`` (the weights sum to 1). Per user this costs
        O(T·D·heads) multiply-adds instead of the O(T·D²) of projecting all T positions."""
        b, _, d = x.shape
        h, dh = self.heads, d // self.heads
        hn = self.ln1(x)  # [B, T, D]
        w_q, w_k, w_v = self.qkv.weight.split(d)  # [D_out, D_in] each
        b_q, _, b_v = self.qkv.bias.split(d)
        q = (hn[:, -1] @ w_q.T + b_q).reshape(b, h, dh)
        q_in = torch.einsum("bhc,hcd->bhd", q, w_k.reshape(h, dh, d)) * (1.0 / math.sqrt(dh))
        att = q_in @ hn.transpose(1, 2) + bias[:, :, -1, :]  # [B, H, T]
        att = self.attn_drop(torch.softmax(att, dim=-1))
        y = torch.einsum("bhd,hcd->bhc", att @ hn, w_v.reshape(h, dh, d)).reshape(b, 1, d) + b_v
        x = x[:, -1:] + self.drop(self.out(y))
        return x + self.drop(self.ff2(self.act(self.ff1(self.ln2(x)))))


class UserTower(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.in_ln = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers)
        )
        self.ln = nn.LayerNorm(cfg.dim)

    def forward(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``seq`` [B, L, D] item vectors (left padded), ``mask`` [B, L] 1 = real item.
        Returns [B, L, D]: the user vector after each position."""
        x, bias = self._inputs(seq, mask)
        for blk in self.blocks:
            x = blk(x, bias)
        return self.ln(x)

    def last(self, seq: torch.Tensor, mask: torch.Tensor, normalised: bool = False) -> torch.Tensor:
        """The user vector after the newest position only ([B, D]): equal to
        ``forward(seq, mask)[:, -1]`` with the final block computed for that position alone
        (:meth:`Block.last_position`). ``normalised``: ``seq`` holds :meth:`item_inputs` rows
        instead of item vectors (serving computes them once per catalogue, not per request)."""
        x, bias = self._inputs(seq, mask, normalised)
        for blk in self.blocks[:-1]:
            x = blk(x, bias)
        x = self.blocks[-1](x, bias, last_only=True)
        return self.ln(x)[:, -1, :]

    def item_inputs(self, items: torch.Tensor) -> torch.Tensor:
        """What the tower reads of each item vector: its layer norm, one row per item, the
        same whatever its position in a history."""
        out: torch.Tensor = self.in_ln(items)
        return out

    def _inputs(
        self, seq: torch.Tensor, mask: torch.Tensor, normalised: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = seq.shape[1]
        m = mask.to(seq.dtype)
        back = torch.arange(n, device=seq.device).flip(0).clamp(max=self.cfg.max_len - 1)
        x = (seq if normalised else self.item_inputs(seq)) + self.pos(back).unsqueeze(0)
        x = self.drop(x) * m.unsqueeze(-1)
        causal = torch.ones(n, n, device=seq.device, dtype=torch.bool).tril()
        allowed = causal.unsqueeze(0) & (m > 0.5).unsqueeze(1)
        bias = torch.where(
            allowed, torch.zeros((), dtype=seq.dtype), torch.full((), MASK_VALUE, dtype=seq.dtype)
        ).unsqueeze(1)
        return x, bias


class UserEncoder(nn.Module):
    """Serving form of the user tower: the user vector after the newest item only."""

    def __init__(self, tower: UserTower) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.tower.last(seq, mask)


class TwoTower(nn.Module):
    text_vectors: torch.Tensor
    counts: torch.Tensor

    def __init__(self, cfg: ModelConfig, text_vectors: torch.Tensor, counts: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.item = ItemTower(cfg, text_vectors.shape[0])
        self.user = UserTower(cfg)
        self.register_buffer("text_vectors", text_vectors.float())
        self.register_buffer("counts", counts.float())
        self.neighbours: Neighbours | None = None

    @property
    def n_items(self) -> int:
        return int(self.text_vectors.shape[0])

    def item_matrix(self, cold_drop: float = 0.0) -> torch.Tensor:
        return self.item(self.text_vectors, self.counts, cold_drop)

    def embed_sequences(
        self, idx: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``idx`` [B, L] item indices, -1 = padding → (vectors, mask)."""
        mask = idx >= 0
        vecs = items[idx.clamp(min=0)] * mask.unsqueeze(-1).to(items.dtype)
        return vecs, mask.to(items.dtype)
