"""Fine-tuning the item text encoder (LoRA) jointly with the towers (``stream-rec train
--tune-text``).

Without it the encoder is frozen: the towers train on cached text vectors. With it, LoRA
adapters (peft, :func:`stream_rec.model.lora.lora_text_encoder`) sit on the encoder's
projections and learn from the same full-softmax loss as the towers:

* the catalogue is tokenised once (the token ids are cached for the whole run);
* each step re-encodes, with gradients, the step's target items (a random sample of at most
  ``items_per_step`` of them) and puts their vectors in place of the cached ones, so the loss
  reaches the adapters through the items the step is about;
* the cached vectors of the whole catalogue are re-encoded without gradients every
  ``refresh_every`` steps (and before every validation), so the rest of the catalogue follows
  the encoder as it moves. A full re-encode per step costs about 10x a step's share on 2 CPU
  cores; on a GPU both are cheap.

At the end the adapters are merged into plain weights (:func:`merged`): that encoder is
exported to ONNX with the usual parity check and embeds every item added from the stream, and
the model's text vectors are its output.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stream_rec.model.text import PooledEncoder, load_encoder, tokenize


@dataclass
class TuneConfig:
    rank: int = 8
    alpha: int = 16
    lr: float = 5e-4
    items_per_step: int = 64
    refresh_every: int = 8
    batch_size: int = 256
    """Texts per forward pass when the whole catalogue is re-encoded."""


class TextTuner:
    """A LoRA-wrapped copy of the text encoder and the cached tokens of the catalogue."""

    def __init__(
        self,
        texts: Sequence[str],
        encoder_path: Path | str | None = None,
        cfg: TuneConfig | None = None,
        device: torch.device | None = None,
        encoder: tuple[PooledEncoder, Any] | None = None,
    ) -> None:
        from stream_rec.model.lora import lora_text_encoder

        self.cfg = cfg or TuneConfig()
        enc, tok = encoder if encoder is not None else load_encoder(encoder_path)
        self.tokenizer: Any = tok
        self.peft = lora_text_encoder(copy.deepcopy(enc), self.cfg.rank, self.cfg.alpha)
        self.device = device or torch.device("cpu")
        self.peft.to(self.device).eval()  # no dropout: what trains is what serves
        tokens = tokenize(self.tokenizer, list(texts))
        self.input_ids = tokens["input_ids"].to(self.device)
        self.attention_mask = tokens["attention_mask"].to(self.device)
        self.lengths = self.attention_mask.sum(dim=1)
        self.steps = 0

    @property
    def n_items(self) -> int:
        return int(self.input_ids.shape[0])

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.peft.parameters() if p.requires_grad]

    def encode(self, idx: torch.Tensor) -> torch.Tensor:
        """Text vectors of the items ``idx`` (with gradients), padded to their longest text."""
        idx = idx.to(self.device)
        n = int(self.lengths[idx].max()) if len(idx) else 1
        out: torch.Tensor = self.peft(
            input_ids=self.input_ids[idx, :n], attention_mask=self.attention_mask[idx, :n]
        )
        return out

    @torch.no_grad()
    def encode_all(self) -> torch.Tensor:
        """The whole catalogue, no gradients, texts batched by length."""
        order = torch.argsort(self.lengths.cpu()).to(self.device)
        out = torch.empty(
            (self.n_items, self.peft.base_model.model.backbone.config.hidden_size),
            device=self.device,
        )
        for start in range(0, self.n_items, self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            out[idx] = self.encode(idx).float()
        return out

    def step_items(self, targets: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The items re-encoded with gradients this step: a sample of the unique targets."""
        unique = torch.unique(targets).cpu().numpy()
        if len(unique) > self.cfg.items_per_step:
            unique = rng.choice(unique, size=self.cfg.items_per_step, replace=False)
        return torch.from_numpy(np.sort(unique)).to(targets.device)

    def due(self) -> bool:
        """Count a step; True when the cached catalogue vectors are to be re-encoded."""
        self.steps += 1
        return self.steps % self.cfg.refresh_every == 0

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.peft.state_dict().items() if "lora" in k}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.peft.load_state_dict(state, strict=False)

    def merged(self) -> PooledEncoder:
        """A plain encoder with the adapters folded in (on CPU, for export and serving)."""
        from stream_rec.model.lora import merge_lora

        enc = merge_lora(copy.deepcopy(self.peft))
        assert isinstance(enc, PooledEncoder)  # noqa: S101
        return enc.cpu().eval()
