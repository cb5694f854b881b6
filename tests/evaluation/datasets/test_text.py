"""Instruction embeddings: offline MiniLM (default) and the CLIP loader with a tiny random CLIPTextModel."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest

from evaluation.datasets.text import (
    TextEncoder,
    TextEncoderConfig,
    TextEncoderError,
    get_encoder,
    pad_tokens,
    resolve_kind,
)
from evaluation.simulators.instructions import INSTRUCTIONS, instruction_for
from evaluation.simulators.sim import UnknownTaskError


@pytest.mark.unit
def test_every_metaworld_task_has_an_instruction():
    import metaworld.env_dict as env_dict

    assert set(env_dict.MT50_V3) == set(INSTRUCTIONS)
    assert len(set(INSTRUCTIONS.values())) == len(INSTRUCTIONS)  # one distinct instruction per task
    with pytest.raises(UnknownTaskError, match="known tasks"):
        instruction_for("pick-plase-v3")


@pytest.mark.unit
def test_minilm_token_features_offline():
    encoder = get_encoder(TextEncoderConfig())
    a, b = encoder.encode(["pick up the puck and place it at the goal", "press the button"])
    assert encoder.dim == 384 and encoder.name == "all-MiniLM-L6-v2"
    assert a.tokens.dtype == np.float32 and a.tokens.shape[1] == 384 and a.tokens.shape[0] > b.tokens.shape[0]
    assert a.mask.all() and np.linalg.norm(a.pooled) == pytest.approx(1.0, abs=1e-5)
    assert float(a.pooled @ b.pooled) < 0.9  # different instructions, different embeddings
    again = get_encoder(TextEncoderConfig()).encode(["press the button"])[0]
    np.testing.assert_array_equal(again.tokens, b.tokens)  # deterministic


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A randomly initialised tiny CLIP text model + a character-level CLIP tokenizer (no downloads)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("clip")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab_file=str(root / "vocab.json"), merges_file=str(root / "merges.txt"))
    cfg = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    CLIPTextModel(cfg).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


@pytest.mark.unit
def test_clip_loader_with_a_tiny_random_model(tiny_clip_dir):
    encoder = TextEncoder(TextEncoderConfig(kind="clip", path=str(tiny_clip_dir)))
    assert encoder.kind == "clip" and encoder.dim == 16
    long, short = encoder.encode(["press the button", "open"])
    assert long.tokens.shape[1] == 16 and long.tokens.shape[0] > short.tokens.shape[0]
    assert long.tokens.dtype == np.float32 and np.isfinite(long.tokens).all()


@pytest.mark.unit
def test_auto_picks_clip_only_when_weights_exist(tiny_clip_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MINIDIFFUSER_CLIP_PATH", raising=False)
    assert resolve_kind(TextEncoderConfig(kind="auto")) == "minilm"
    assert resolve_kind(TextEncoderConfig(kind="auto", path=str(tmp_path))) == "minilm"
    assert resolve_kind(TextEncoderConfig(kind="auto", path=str(tiny_clip_dir))) == "clip"
    monkeypatch.setenv("MINIDIFFUSER_CLIP_PATH", str(tiny_clip_dir))
    assert resolve_kind(TextEncoderConfig(kind="auto")) == "clip"


@pytest.mark.unit
def test_clip_requested_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIDIFFUSER_CLIP_PATH", raising=False)
    with pytest.raises(TextEncoderError, match="MINIDIFFUSER_CLIP_PATH"):
        TextEncoder(TextEncoderConfig(kind="clip", path=str(tmp_path / "missing")))


@pytest.mark.unit
def test_pad_tokens():
    tokens, mask = pad_tokens(
        [(np.ones((2, 3), np.float32), np.ones(2, bool)), (np.ones((4, 3)), np.ones(4, bool))]
    )
    assert tokens.shape == (2, 4, 3) and mask.tolist() == [[True, True, False, False], [True] * 4]
    assert not tokens[0, 2:].any()
