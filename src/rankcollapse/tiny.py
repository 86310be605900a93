"""Small BERT encoders trained from scratch on a token-level task.

Built from transformers' own ``BertConfig`` and ``BertForMaskedLM``, so that the
library's capture and weight split read a trained encoder exactly like a
pretrained one. A task is any object with ``sample(batch_size, generator)`` and
``eval_batch()`` returning ``input_ids``, ``attention_mask`` and ``labels``
(-100 where no prediction is scored); ``MaskedTokenTask`` is the one shipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

IGNORE = -100


@dataclass
class EncoderConfig:
    """The shape of a from-scratch encoder (post-LN BERT layers)."""

    vocab_size: int
    d: int = 64  # hidden size
    n_layers: int = 2  # encoder layers
    n_heads: int = 2  # attention heads; d_k = d / n_heads
    d_ff: int = 256  # feed-forward width
    max_positions: int = 64  # learned absolute positions
    init_range: float = 0.02  # std of the normal initialiser
    dropout: float = 0.0  # hidden and attention dropout


@dataclass
class TrainConfig:
    """How an encoder is trained: AdamW with linear warm-up and linear decay."""

    steps: int = 300  # optimiser steps
    batch_size: int = 32  # sequences per step
    lr: float = 1e-3  # peak learning rate
    warmup: float = 0.1  # fraction of steps spent warming up
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # max global gradient norm
    eval_every: int = 50  # steps between held-out evaluations


def build_encoder(cfg: EncoderConfig, seed: int):
    """A ``BertForMaskedLM`` at random initialisation, drawn from ``seed``."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        intermediate_size=cfg.d_ff,
        max_position_embeddings=cfg.max_positions,
        initializer_range=cfg.init_range,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        type_vocab_size=1,
        pad_token_id=0,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return BertForMaskedLM(config)


# ----------------------------------------------------------------------------
# The masked-token task on a token stream.


class MaskedTokenTask:
    """Predict masked tokens of fixed-length sequences ``[CLS] w_1 .. w_m [SEP]``.

    The vocabulary is reduced to the tokens that occur (ids 0-4 are PAD, UNK,
    CLS, SEP, MASK). Sequences are split in order: the last ``eval_fraction``
    are held out, with one fixed masking drawn from ``eval_seed``. Each body
    token is masked with probability ``mask_prob`` (replaced by MASK), at
    least one per sequence.
    """

    PAD, UNK, CLS, SEP, MASK = range(5)

    def __init__(
        self,
        sequences: torch.Tensor,
        vocab_size: int,
        mask_prob: float,
        eval_fraction: float,
        eval_seed: int,
    ):
        n_eval = max(1, round(eval_fraction * len(sequences)))
        if n_eval >= len(sequences):
            raise ValueError(
                f"{len(sequences)} sequences leave none for training at "
                f"eval_fraction {eval_fraction}"
            )
        self.train_ids = sequences[:-n_eval]  # (N_train, n)
        self.eval_ids = sequences[-n_eval:]  # (N_eval, n)
        self.vocab_size = vocab_size
        self.mask_prob = mask_prob
        self._eval = self._mask(self.eval_ids, torch.Generator().manual_seed(eval_seed))

    @classmethod
    def from_lines(
        cls,
        lines: list[str],
        tokenizer,
        seq_len: int,
        mask_prob: float,
        eval_fraction: float,
        eval_seed: int,
    ) -> MaskedTokenTask:
        """Cut the token stream of ``lines`` into sequences of ``seq_len`` tokens."""
        stream = [
            t
            for line in lines
            for t in tokenizer(line, add_special_tokens=False)["input_ids"]
        ]
        types = sorted(set(stream))
        remap = {t: i + 5 for i, t in enumerate(types)}
        body = seq_len - 2
        rows = [
            [cls.CLS, *(remap[t] for t in stream[k : k + body]), cls.SEP]
            for k in range(0, len(stream) - body + 1, body)
        ]
        return cls(
            torch.tensor(rows), len(types) + 5, mask_prob, eval_fraction, eval_seed
        )

    @classmethod
    def from_markov(
        cls,
        vocab: int,
        branching: int,
        seq_len: int,
        count: int,
        mask_prob: float,
        eval_fraction: float,
        seed: int,
    ) -> MaskedTokenTask:
        """Sequences from ``markov_sequences``; ``seed`` also fixes the eval mask."""
        body = markov_sequences(vocab, branching, seq_len - 2, count, seed) + 5
        cls_col = torch.full((count, 1), cls.CLS)
        sep_col = torch.full((count, 1), cls.SEP)
        return cls(
            torch.cat([cls_col, body, sep_col], dim=1),
            vocab + 5,
            mask_prob,
            eval_fraction,
            seed,
        )

    @property
    def seq_len(self) -> int:
        return self.train_ids.shape[1]

    def _mask(self, ids: torch.Tensor, gen: torch.Generator) -> dict:
        # Bernoulli mask over body positions; force one where none was drawn.
        body = torch.zeros_like(ids, dtype=torch.bool)
        body[:, 1:-1] = True
        masked = (torch.rand(ids.shape, generator=gen) < self.mask_prob) & body
        none = ~masked.any(dim=1)
        pick = torch.randint(1, ids.shape[1] - 1, (int(none.sum()),), generator=gen)
        masked[none.nonzero().squeeze(1), pick] = True

        labels = torch.where(masked, ids, torch.full_like(ids, IGNORE))
        inputs = torch.where(masked, torch.full_like(ids, self.MASK), ids)
        return {
            "input_ids": inputs,
            "attention_mask": torch.ones_like(ids),
            "labels": labels,
        }

    def sample(self, batch_size: int, gen: torch.Generator) -> dict:
        rows = torch.randint(0, len(self.train_ids), (batch_size,), generator=gen)
        return self._mask(self.train_ids[rows], gen)

    def eval_batch(self) -> dict:
        return self._eval


def markov_sequences(
    vocab: int, branching: int, length: int, count: int, seed: int
) -> torch.Tensor:
    """``count`` token sequences (ids 0 .. vocab-1) from a sparse random Markov chain.

    Every token has ``branching`` successors, drawn without replacement, with
    transition probabilities from a flat Dirichlet; first tokens are uniform.
    Returns (count, length).
    """
    gen = torch.Generator().manual_seed(seed)
    succ = torch.stack(
        [torch.randperm(vocab, generator=gen)[:branching] for _ in range(vocab)]
    )  # (vocab, branching)
    probs = -torch.log(torch.rand(vocab, branching, generator=gen))
    probs = probs / probs.sum(dim=1, keepdim=True)  # flat Dirichlet rows

    x = torch.randint(0, vocab, (count,), generator=gen)
    steps = [x]
    for _ in range(length - 1):
        k = torch.multinomial(probs[x], 1, generator=gen).squeeze(1)
        x = succ[x, k]
        steps.append(x)
    return torch.stack(steps, dim=1)


# ----------------------------------------------------------------------------
# Training and evaluation.


@torch.no_grad()
def evaluate(model, task, device) -> dict:
    """Held-out loss (mean cross-entropy over scored tokens) and accuracy."""
    model.eval()
    batch = {k: v.to(device) for k, v in task.eval_batch().items()}
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).logits
    scored = batch["labels"] != IGNORE
    loss = torch.nn.functional.cross_entropy(logits[scored], batch["labels"][scored])
    acc = (logits[scored].argmax(-1) == batch["labels"][scored]).float().mean()
    return {"loss": float(loss), "accuracy": float(acc)}


def train(model, task, cfg: TrainConfig, seed: int, device, progress=None):
    """Train ``model`` on ``task``; returns the history as a tidy DataFrame.

    Rows: ``step``, ``split`` (train | eval), ``metric`` (loss | accuracy),
    ``value``. Train loss is logged every step, held-out scores every
    ``eval_every`` steps and at the end.
    """
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    warm = max(1, int(cfg.warmup * cfg.steps))

    def schedule(step):  # linear warm-up, then linear decay to zero
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (cfg.steps - step) / max(1, cfg.steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    history = []
    for step in range(cfg.steps):
        if step % cfg.eval_every == 0:
            history += _eval_rows(model, task, device, step)
            model.train()

        # One step: masked-token cross-entropy on a fresh batch.
        batch = {k: v.to(device) for k, v in task.sample(cfg.batch_size, gen).items()}
        loss = model(**batch).loss
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        history.append(dict(step=step, split="train", metric="loss", value=loss.item()))
        if progress is not None:
            progress.update(1)

    history += _eval_rows(model, task, device, cfg.steps)
    model.eval()
    return pd.DataFrame(history)


def _eval_rows(model, task, device, step) -> list[dict]:
    scores = evaluate(model, task, device)
    return [dict(step=step, split="eval", metric=k, value=v) for k, v in scores.items()]
