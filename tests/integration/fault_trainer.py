"""``python -m tests.integration.fault_trainer crash|corrupt``: the real ``stream-rec trainer``
with one fault injected into its training runs, for the tests that a failed run changes nothing
that is served.

* ``crash`` — every LoRA fine-tune raises in the middle of the run;
* ``corrupt`` — every exported version gets one of its files damaged right after it was written
  (as a full disk or a bad copy would), before the trainer checks and announces it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def main() -> None:
    from stream_rec.model import lora, registry

    mode = sys.argv.pop(1)
    if mode == "crash":

        def crash(*args: Any, **kwargs: Any) -> Any:
            msg = "injected fault: the fine-tune crashed"
            raise RuntimeError(msg)

        lora.finetune_incremental = crash  # type: ignore[assignment]
    elif mode == "corrupt":
        commit = registry.commit_version

        def commit_then_damage(tmp: Path, *args: Any, **kwargs: Any) -> Path:
            final = commit(tmp, *args, **kwargs)
            victim = next(p for p in sorted(final.rglob("*.onnx")))
            victim.write_bytes(victim.read_bytes()[:-16])  # a truncated file
            return final

        registry.commit_version = commit_then_damage  # type: ignore[assignment]
    else:
        raise SystemExit(f"unknown fault {mode!r}")
    from stream_rec.cli import main as cli

    sys.argv = ["stream-rec", "trainer"]
    cli()


if __name__ == "__main__":
    main()
