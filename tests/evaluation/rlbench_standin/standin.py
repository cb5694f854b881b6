"""Helpers for tests that use the stand-in ``rlbench``/``pyrep`` packages of this folder.

``activate`` (the body of the test modules' ``standin`` fixture) puts this folder first on ``sys.path`` for one test (``monkeypatch``) and removes
every ``rlbench*``/``pyrep*`` module from ``sys.modules`` before and after it, so no other test can
import the stand-in. ``FakeTextEncoder`` replaces the MiniLM encoder in importer tests.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

STANDIN_DIR = Path(__file__).resolve().parent
_ROOTS = ("rlbench", "pyrep")


def _purge() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in _ROOTS]:
        del sys.modules[name]


def activate(monkeypatch, flavour: str = "upstream") -> Iterator[Path]:
    """Body of the test modules' ``standin`` fixture: the stand-in importable for one test (yields this folder).

    ``flavour``: ``upstream`` (stepjam/RLBench 1.2) or ``fork`` (PerAct's fork; see ``rlbench/_flavour.py``)."""
    _purge()
    monkeypatch.setenv("RLBENCH_STANDIN_FLAVOUR", flavour)
    monkeypatch.syspath_prepend(str(STANDIN_DIR))
    yield STANDIN_DIR
    _purge()


class FakeTextEncoder:
    """Test fake of ``evaluation.datasets.text.TextEncoder``: deterministic 4-d token features per word."""

    name = "fake-words"

    def encode(self, texts):
        from evaluation.datasets.text import InstructionEmbedding

        out = []
        for text in texts:
            words = text.split() or [""]
            tokens = np.array(
                [[len(w), sum(map(ord, w)) % 97, i, 1.0] for i, w in enumerate(words)], np.float32
            )
            pooled = tokens.mean(0) / max(float(np.linalg.norm(tokens.mean(0))), 1e-12)
            out.append(
                InstructionEmbedding(text, tokens, np.ones(len(tokens), bool), pooled.astype(np.float32))
            )
        return out
