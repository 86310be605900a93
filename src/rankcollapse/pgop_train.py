"""Training vanilla and PG-OP encoders side by side, and what E6 logs about them.

Tasks: ``word_order`` fine-tunes a pretrained encoder to tell a corpus sentence from
the same words shuffled; ``offset_copy`` trains a small encoder from scratch to output
at position i the token at ``(i + k_j) mod n``, with the offset ``k_j`` set by the
segment j that i lies in (routing that depends on position); ``sst2`` fine-tunes on
GLUE SST-2 from the hub (paper profile only). Every run writes one long log (task,
arm, seed, step, metric, value, layer, head), gate profiles, and the identifiability
count ``(H - rank G) d_k`` of its final gates.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rankcollapse import entropy, models, pgop

log = logging.getLogger(__name__)

ARMS = ("vanilla", "pgop")

# The training log, one row per evaluation and metric. layer = head = -1 marks a value
# of the whole model: train_loss (mean since the last evaluation), eval_loss,
# eval_accuracy, attn_entropy and attn_entropy_norm (mean over layers, heads and
# sequences), perm_sensitivity, elapsed_s, and for PG-OP gate_mean, gate_std,
# gate_min, gate_max. Per layer and head: attn_entropy_head, attn_entropy_norm_head;
# per layer (head = -1): gate_rank.
LOG_COLUMNS = ["task", "arm", "seed", "step", "metric", "value", "layer", "head"]
GATE_COLUMNS = ["task", "arm", "seed", "step", "layer", "head", "position", "gate"]


@dataclass
class Batch:
    """Token ids, mask and labels: (B,) per sequence or (B, n) per token."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device) -> Batch:
        return Batch(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels))
        )


class Classifier(nn.Module):
    """An encoder with a linear read-out, per sequence (masked mean) or per token."""

    def __init__(self, encoder: nn.Module, n_out: int, per_token: bool):
        super().__init__()
        self.encoder = encoder
        self.per_token = per_token
        self.head = nn.Linear(encoder.config.hidden_size, n_out)

    def forward(self, batch: Batch, output_attentions: bool = False):
        out = self.encoder(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_attentions=output_attentions,
        )
        h = out.last_hidden_state  # (B, n, d)
        if not self.per_token:  # mean over real tokens: (B, d)
            m = batch.attention_mask.unsqueeze(-1).to(h.dtype)
            h = (h * m).sum(1) / m.sum(1)
        return self.head(h), out.attentions  # (B, C) or (B, n, C)


# ----------------------------------------------------------------------------
# Tasks.


class SentenceTask:
    """Sequence classification of texts with a pretrained encoder and its tokenizer."""

    per_token = False
    n_out = 2

    def __init__(self, cfg: dict, model_dir: str):
        self.cfg = cfg
        self.model_dir = model_dir
        self.tokenizer = models.load_tokenizer(model_dir)

    def encoder(self, seed: int, device) -> nn.Module:
        model = models.load_model(self.model_dir, str(device)).train()
        if self.cfg.get("freeze_word_embeddings"):
            model.embeddings.word_embeddings.weight.requires_grad_(False)
        return model

    def encode(self, texts: list[str], labels: list[int]) -> Batch:
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.cfg["max_tokens"],
            return_tensors="pt",
        )
        return Batch(enc["input_ids"], enc["attention_mask"], torch.tensor(labels))

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])


class WordOrderTask(SentenceTask):
    """Label 1: a corpus sentence as written; label 0: its words in a shuffled order.

    Sentences are lower-cased and stripped of punctuation, so that word order is the
    only cue. Train and test sentences are disjoint; test shuffles are fixed by
    ``data_seed``, training shuffles are drawn afresh at every step.
    """

    def __init__(self, cfg: dict, model_dir: str, lines: list[str]):
        super().__init__(cfg, model_dir)

        # Keep sentences with enough words, short enough not to be truncated.
        sentences = []
        for line in lines:
            words = "".join(
                c if c.isalnum() or c.isspace() else " " for c in line.lower()
            ).split()
            if (
                len(set(words)) >= cfg["min_words"]
                and self.n_tokens(" ".join(words)) <= cfg["max_tokens"]
            ):
                sentences.append(words)
        rng = random.Random(cfg["data_seed"])
        rng.shuffle(sentences)
        n_test = round(len(sentences) * cfg["test_fraction"])
        self.test, self.train = sentences[:n_test], sentences[n_test:]
        log.info(
            "word_order: %d train and %d test sentences",
            len(self.train),
            len(self.test),
        )

        # Fixed test set: every test sentence as written and shuffled.
        texts, labels = [], []
        for words in self.test:
            texts += [" ".join(words), " ".join(shuffled(words, rng))]
            labels += [1, 0]
        bs = cfg["eval_batch_size"]
        self.eval_set = [
            self.encode(texts[i : i + bs], labels[i : i + bs])
            for i in range(0, len(texts), bs)
        ]

    def train_batch(self, gen: torch.Generator) -> Batch:
        bs = self.cfg["batch_size"]
        idx = torch.randint(len(self.train), (bs,), generator=gen).tolist()
        labels = torch.randint(2, (bs,), generator=gen).tolist()
        rng = random.Random(int(torch.randint(2**31, (1,), generator=gen)))
        texts = [
            " ".join(self.train[i] if y else shuffled(self.train[i], rng))
            for i, y in zip(idx, labels, strict=True)
        ]
        return self.encode(texts, labels)


def shuffled(words: list[str], rng: random.Random) -> list[str]:
    """The words in a random order that differs from the given one."""
    out = list(words)
    while out == words:
        rng.shuffle(out)
    return out


class SST2Task(SentenceTask):
    """GLUE SST-2: sentiment of movie-review sentences; eval on the validation split."""

    def __init__(
        self, cfg: dict, model_dir: str, train: pd.DataFrame, validation: pd.DataFrame
    ):
        super().__init__(cfg, model_dir)
        self.train = train
        if cfg.get("max_eval"):
            validation = validation.iloc[: cfg["max_eval"]]
        bs = cfg["eval_batch_size"]
        self.eval_set = [
            self.encode(list(chunk["sentence"]), list(chunk["label"]))
            for _, chunk in validation.groupby(validation.index // bs)
        ]

    def train_batch(self, gen: torch.Generator) -> Batch:
        idx = torch.randint(len(self.train), (self.cfg["batch_size"],), generator=gen)
        rows = self.train.iloc[idx.tolist()]
        return self.encode(list(rows["sentence"]), list(rows["label"]))


def read_sst2(train_path, validation_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two GLUE SST-2 parquet files as frames with ``sentence`` and ``label``."""
    frames = []
    for path in (train_path, validation_path):
        df = pd.read_parquet(path, columns=["sentence", "label"])
        frames.append(df.reset_index(drop=True))
    return frames[0], frames[1]


def download_sst2(cfg: dict) -> tuple[str, str]:
    """Local paths of the SST-2 parquet files, fetched from the hub when not cached."""
    from huggingface_hub import hf_hub_download

    return tuple(
        hf_hub_download(
            cfg["repo_id"], cfg[key], repo_type="dataset", revision=cfg["revision"]
        )
        for key in ("train_file", "eval_file")
    )


class OffsetCopyTask:
    """Output at position i the token at ``(i + offsets[j]) mod n``, j = i's segment.

    The n positions are split into ``len(offsets)`` equal segments; random tokens from
    ``vocab`` symbols. Worked case: n = 4, offsets [1, -1]: positions 0, 1 copy from
    1, 2 and positions 2, 3 copy from 1, 2; input [a, b, c, d] -> [b, c, b, c].
    """

    per_token = True

    def __init__(self, cfg: dict):
        self.cfg = cfg
        n, offsets = cfg["seq_len"], cfg["offsets"]
        segment = torch.arange(n) * len(offsets) // n  # (n,)
        self.source = (torch.arange(n) + torch.tensor(offsets)[segment]) % n  # (n,)
        self.n_out = cfg["vocab"]
        gen = torch.Generator().manual_seed(cfg["data_seed"])
        bs = cfg["batch_size"]
        self.eval_set = [
            self.make(min(bs, cfg["eval_size"] - i), gen)
            for i in range(0, cfg["eval_size"], bs)
        ]

    def make(self, size: int, gen: torch.Generator) -> Batch:
        x = torch.randint(self.cfg["vocab"], (size, self.cfg["seq_len"]), generator=gen)
        return Batch(x, torch.ones_like(x), x[:, self.source])

    def train_batch(self, gen: torch.Generator) -> Batch:
        return self.make(self.cfg["batch_size"], gen)

    def encoder(self, seed: int, device) -> nn.Module:
        from transformers import BertConfig, BertModel

        c = self.cfg
        config = BertConfig(
            vocab_size=c["vocab"] + 1,
            pad_token_id=c["vocab"],  # pad id never used
            hidden_size=c["d"],
            num_hidden_layers=c["n_layers"],
            num_attention_heads=c["n_heads"],
            intermediate_size=c["d_ff"],
            max_position_embeddings=c["seq_len"],
            type_vocab_size=1,
            hidden_dropout_prob=c["dropout"],
            attention_probs_dropout_prob=c["dropout"],
        )
        config._attn_implementation = "eager"
        torch.manual_seed(seed)
        return BertModel(config, add_pooling_layer=False).to(device).train()


def build_task(
    name: str, cfg: dict, model_dir: str | None = None, lines: list[str] | None = None
):
    """The task object of a ``e6.training.tasks`` entry."""
    if name == "word_order":
        return WordOrderTask(cfg, model_dir, lines)
    if name == "offset_copy":
        return OffsetCopyTask(cfg)
    if name == "sst2":
        return SST2Task(cfg, model_dir, *read_sst2(*download_sst2(cfg)))
    raise ValueError(f"e6.training.tasks: unknown task {name!r}")


# ----------------------------------------------------------------------------
# What a run logs.


@torch.no_grad()
def evaluate(model: Classifier, task, device, n_gate: int):
    """Eval loss and accuracy, attention entropy per (layer, head) (mean over
    sequences), permutation sensitivity, and the gate matrices of every layer."""
    model.eval()
    loss = correct = count = 0.0
    ent = []  # per sequence: (entropy, entropy / log keys), each (L, H)
    for batch in task.eval_set:
        batch = batch.to(device)
        logits, atts = model(batch, output_attentions=True)  # atts: L x (B,H,n,n)
        loss += F.cross_entropy(
            logits.flatten(0, -2), batch.labels.flatten(), reduction="sum"
        ).item()
        correct += (logits.argmax(-1) == batch.labels).sum().item()
        count += batch.labels.numel()

        # Attention entropy of each sequence without its padding, as E7 defines it.
        probs = torch.stack(atts, dim=1)  # (B, L, H, n, n)
        for b, n in enumerate(batch.attention_mask.sum(-1).tolist()):
            h, h_norm = entropy.attention_entropy(probs[b, :, :, :n, :n])
            ent.append(torch.stack([h, h_norm]))  # (2, L, H)

    # Head permutation sensitivity on the first eval batch (gates stay in place).
    first = task.eval_set[0].to(device)
    enc = model.encoder
    ref = enc(
        input_ids=first.input_ids, attention_mask=first.attention_mask
    ).last_hidden_state
    with pgop.heads_permuted(
        enc, pgop.cyclic_permutation(enc.config.num_attention_heads)
    ):
        perm = pgop.relative_change(enc, first.input_ids, first.attention_mask, ref)

    model.train()
    scalars = {
        "eval_loss": loss / count,
        "eval_accuracy": correct / count,
        "perm_sensitivity": perm,
    }
    G = pgop.gate_matrices(enc, n_gate) if pgop.is_converted(enc) else None
    mean = torch.stack(ent).mean(0).cpu()  # (2, L, H)
    return scalars, (mean[0], mean[1]), G


def _log_rows(step, scalars, entropies, G, rank_rtol) -> list[tuple]:
    """(step, metric, value, layer, head) rows of one evaluation; layer and head are
    -1 for values of the whole model."""
    ent, ent_norm = entropies  # (L, H) each
    scalars = dict(scalars, attn_entropy=ent.mean(), attn_entropy_norm=ent_norm.mean())
    if G is not None:  # (L, n, H)
        scalars |= {
            "gate_mean": G.mean(),
            "gate_std": G.std(),
            "gate_min": G.min(),
            "gate_max": G.max(),
        }
    rows = [(step, k, float(v), -1, -1) for k, v in scalars.items()]

    # Per layer and head: attention entropy; per layer: rank of the gate matrix.
    L, H = ent.shape
    for metric, t in (("attn_entropy_head", ent), ("attn_entropy_norm_head", ent_norm)):
        rows += [
            (step, metric, t[l, h].item(), l, h) for l in range(L) for h in range(H)
        ]
    if G is not None:
        rows += [
            (step, "gate_rank", float(pgop.gate_rank(G[l], rank_rtol)[0]), l, -1)
            for l in range(L)
        ]
    return rows


def identifiability_rows(encoder, n: int, rank_rtol: float) -> list[dict]:
    """Per layer: rank G, the count ``(H - rank G) d_k`` and the kernel of reading A
    built from the weights (readers R: each head's W_V in the next layer), at the
    configured ``rank_rtol`` and at round-off level (``_exact``)."""
    layers = encoder.base_model.encoder.layer
    G_all = pgop.gate_matrices(encoder, n)  # (L, n, H), on the CPU
    weights = [models.layer_weights(layer) for layer in layers]
    W_O = [w.W_O.cpu() for w in weights]  # (H, d_k, d)
    W_V = [w.W_V.cpu() for w in weights]  # (H, d, d_k)
    rows = []
    for l, w in enumerate(weights):
        H, dk = w.n_heads, w.d_k
        rank, s = pgop.gate_rank(G_all[l], rank_rtol)
        rank_exact, _ = pgop.gate_rank(G_all[l])
        maps = (
            [pgop.reading_a_map(G_all[l], W_O[l], R) for R in W_V[l + 1]]
            if l + 1 < len(weights)
            else []
        )
        kernel = [pgop.kernel_dim(B, rank_rtol) for B in maps]
        kernel_exact = [pgop.kernel_dim(B) for B in maps]
        rows.append(
            {
                "layer": l,
                "n": G_all.shape[1],
                "H": H,
                "d_k": dk,
                "rank_G": rank,
                "rank_G_exact": rank_exact,
                "sigma2_ratio_G": float(s[1] / s[0]) if len(s) > 1 else 0.0,
                "free_dirs_vanilla": (H - 1) * dk,
                "free_dirs_formula": (H - rank) * dk,
                "free_dirs_formula_exact": (H - rank_exact) * dk,
                "kernel_min": min(kernel, default=math.nan),
                "kernel_max": max(kernel, default=math.nan),
                "kernel_exact_min": min(kernel_exact, default=math.nan),
                "kernel_exact_max": max(kernel_exact, default=math.nan),
            }
        )
    return rows


# ----------------------------------------------------------------------------
# One run.


def train_run(
    task_name: str,
    task,
    arm: str,
    seed: int,
    cfg: dict,
    pgop_cfg: dict,
    device,
    log_every: int,
    gate_positions: int,
    rank_rtol: float,
) -> dict[str, pd.DataFrame]:
    """Train one (task, arm, seed); return the ``log``, ``gates`` and
    ``identifiability`` tables. Both arms start from the same weights and draw the
    same batches: PG-OP's gates start at 1 and use no random numbers."""
    if arm not in ARMS:
        raise ValueError(f"arm {arm!r}: expected one of {ARMS}")
    device = torch.device(device)
    torch.manual_seed(seed)
    encoder = task.encoder(seed, device)
    if arm == "pgop":
        pgop.convert(encoder, pgop_cfg)
    torch.manual_seed(seed)
    model = Classifier(encoder, task.n_out, task.per_token).to(device).train()
    n_gate = min(gate_positions, pgop.max_length(encoder))

    # Pretrained weights get lr; new parameters (the read-out, the gates) new_lr.
    def is_new(name):
        return name.startswith("head.") or f".{pgop.GATE_PREFIX}" in name

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    new = [p for n, p in params if is_new(n)]
    old = [p for n, p in params if not is_new(n)]
    lr, new_lr = cfg["lr"], cfg.get("new_lr") or cfg["lr"]
    opt = torch.optim.AdamW(
        [{"params": old, "lr": lr}, {"params": new, "lr": new_lr}],
        weight_decay=cfg["weight_decay"],
    )
    steps, warmup = cfg["steps"], cfg["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min((s + 1) / max(warmup, 1), (steps - s) / max(steps - warmup, 1)),
    )
    gen = torch.Generator().manual_seed(seed)

    rows, gate_rows = [], []
    started = time.perf_counter()

    def record(step, train_loss):
        scalars, ents, G = evaluate(model, task, device, n_gate)
        if train_loss is not None:
            scalars["train_loss"] = train_loss
        scalars["elapsed_s"] = time.perf_counter() - started
        rows.extend(_log_rows(step, scalars, ents, G, rank_rtol))
        if G is not None:
            L, n, H = G.shape
            gate_rows.extend(
                (step, l, h, i, G[l, i, h].item())
                for l in range(L)
                for h in range(H)
                for i in range(n)
            )

    # Train, evaluating at step 0, every log_every steps and at the end.
    record(0, None)
    running = []
    for step in tqdm(
        range(1, steps + 1), desc=f"{task_name}/{arm}/seed{seed}", mininterval=5
    ):
        batch = task.train_batch(gen).to(device)
        logits, _ = model(batch)
        loss = F.cross_entropy(logits.flatten(0, -2), batch.labels.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % log_every == 0 or step == steps:
            record(step, sum(running) / len(running))
            running = []

    # Tables.
    keys = {"task": task_name, "arm": arm, "seed": seed}
    logdf = pd.DataFrame(rows, columns=LOG_COLUMNS[3:])
    gates = pd.DataFrame(gate_rows, columns=GATE_COLUMNS[3:])
    ident = pd.DataFrame(identifiability_rows(encoder, n_gate, rank_rtol))
    out = {}
    for name, df in (("log", logdf), ("gates", gates), ("identifiability", ident)):
        for k, v in reversed(keys.items()):
            df.insert(0, k, v)
        out[name] = df
    log.info(
        "%s/%s/seed%d: final %s",
        task_name,
        arm,
        seed,
        {
            k: round(v, 4)
            for k, v in logdf[logdf.step == steps]
            .query("layer == -1")
            .set_index("metric")["value"]
            .items()
        },
    )
    return out


# ----------------------------------------------------------------------------
# Across seeds.


def run_scores(training_log: pd.DataFrame, scores: list[str]) -> pd.DataFrame:
    """The scores of every run: ``<metric>`` is the metric at the run's last step,
    ``<metric>_auc`` its mean over the evaluations after step 0 (learning speed)."""
    df = training_log[(training_log["layer"] == -1) & (training_log["step"] > 0)]
    keys = ["task", "arm", "seed"]
    out = []
    for score in scores:
        metric = score.removesuffix("_auc")
        sel = df[df["metric"] == metric]
        if score.endswith("_auc"):
            val = sel.groupby(keys)["value"].mean()
        else:
            val = sel.sort_values("step").groupby(keys)["value"].last()
        out.append(val.rename("value").reset_index().assign(score=score))
    return pd.concat(out, ignore_index=True)[keys + ["score", "value"]]


def score_summary(scores: pd.DataFrame, noise_k: float) -> pd.DataFrame:
    """Per task and score: mean and spread of each arm, the gap PG-OP minus
    vanilla, and whether it exceeds seed noise: ``|gap| > noise_k * SE``, with SE
    the standard error of a difference of two means, ``sqrt(s_v^2/n_v + s_p^2/n_p)``.

    Worked case: vanilla [0.8, 0.9], PG-OP [0.9, 1.0]: gap 0.1, each variance 0.005,
    SE = sqrt(0.005/2 + 0.005/2) = 0.0707; with noise_k = 2 the gap (0.1 < 0.141) is
    within noise, with noise_k = 0.5 it exceeds it.
    """
    rows = []
    for (task, score), df in scores.groupby(["task", "score"], sort=False):
        arm = {a: df[df["arm"] == a].set_index("seed")["value"] for a in ARMS}
        v, p = arm["vanilla"], arm["pgop"]
        few = min(len(v), len(p)) < 2
        se = math.nan if few else math.sqrt(v.var() / len(v) + p.var() / len(p))
        gap = p.mean() - v.mean()
        paired = (p - v).dropna()
        if few:
            decision = "too few seeds"
        elif gap > noise_k * se:
            decision = "pgop better"
        elif gap < -noise_k * se:
            decision = "pgop worse"
        else:
            decision = "within noise"
        rows.append(
            {
                "task": task,
                "score": score,
                "n_vanilla": len(v),
                "n_pgop": len(p),
                "mean_vanilla": v.mean(),
                "std_vanilla": v.std(),
                "mean_pgop": p.mean(),
                "std_pgop": p.std(),
                "gap": gap,
                "se": se,
                "noise": noise_k * se,
                "paired_gap_mean": paired.mean(),
                "paired_gap_std": paired.std(),
                "decision": decision,
            }
        )
    return pd.DataFrame(rows)
