"""The model side of the pipeline: item text encoding, two towers, training, LoRA fine-tunes,
ONNX export into a versioned registry, and the serving-time :class:`OnnxScorer`.

Never imports faust. Attributes load lazily so a scoring worker that only needs
:class:`OnnxScorer` does not pay for torch/transformers imports it does not use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "OnnxScorer": "stream_rec.model.runtime",
    "ModelConfig": "stream_rec.model.net",
    "TwoTower": "stream_rec.model.net",
    "TrainConfig": "stream_rec.model.train",
    "train": "stream_rec.model.train",
    "export_version": "stream_rec.model.export",
    "load_torch_model": "stream_rec.model.export",
    "ParityError": "stream_rec.model.export",
    "finetune_incremental": "stream_rec.model.lora",
    "train_and_export": "stream_rec.model.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
