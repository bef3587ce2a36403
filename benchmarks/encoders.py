"""Passage-encoding speed of the bundled encoders on the same English paragraphs (the first 150
SQuAD v1.1 dev paragraphs), each through rag's default runtime (int8 ONNX on CPU). With
`rag eval` on SQuAD per encoder, it is the README's "one encoder for every index" table.

    .venv/bin/python benchmarks/encoders.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.evaluate import load  # noqa: E402
from rag.models.encoder import Encoder  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    paragraphs = [" ".join(c.split()) for c in
                  list(load(DATA / "squad_dev" / "squad-dev-v1.1.json").contexts.values())[:150]]
    print("| encoder | paragraphs/s | seconds for 150 |")
    print("|---|---|---|")
    for name in ("all-MiniLM-L6-v2", "multilingual-e5-small"):
        encoder = Encoder(name)
        encoder.encode(["warm up"])  # model load and export outside the timing
        started = time.perf_counter()
        encoder.encode(paragraphs)
        seconds = time.perf_counter() - started
        print(f"| {name} | {len(paragraphs) / seconds:.1f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
