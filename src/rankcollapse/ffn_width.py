"""E9: encoders that differ only in feed-forward width ``d_ff = m d``, from scratch.

Per width and seed: the task score, E4's energy outside the attention-reachable
subspace T(X) and the affine and effective ranks of every layer's tokens, at
initialisation and after training; C7 compares the narrow widths with ``4d``.
"""

from __future__ import annotations

import pandas as pd
import torch

from rankcollapse import reachable, tiny
from rankcollapse.capture import run_and_capture
from rankcollapse.metrics import token_metrics
from rankcollapse.verdict import Verdict

# Per-run summaries (one number per run and phase), the names used in every table.
QUANTITIES = (
    "accuracy",  # held-out masked-token accuracy
    "loss",  # held-out cross-entropy
    "attn_block_energy_outside",  # median over (sequence, layer), containment T
    "mlp_energy_outside",  # median over (sequence, layer), generation T
    "layer_energy_outside",  # median over (sequence, layer), generation T
    "affine_rank_kept",  # share of (sequence, layer) whose output keeps its rank
    "final_affine_rank",  # median last-layer affine rank over n - 1
    "final_effective_rank",  # median last-layer effective rank
)


def build_task(task_cfg: dict, tokenizer=None) -> tiny.MaskedTokenTask:
    """The configured task: ``markov`` (synthetic chain) or ``corpus`` (real text)."""
    common = dict(
        mask_prob=task_cfg["mask_prob"], eval_fraction=task_cfg["eval_fraction"]
    )
    if task_cfg["source"] == "markov":
        return tiny.MaskedTokenTask.from_markov(
            task_cfg["vocab"],
            task_cfg["branching"],
            task_cfg["seq_len"],
            task_cfg["sequences"],
            seed=task_cfg["seed"],
            **common,
        )
    if task_cfg["source"] == "corpus":
        from rankcollapse.corpus import read_lines

        return tiny.MaskedTokenTask.from_lines(
            read_lines(task_cfg.get("corpus_path")),
            tokenizer,
            task_cfg["seq_len"],
            eval_seed=task_cfg["seed"],
            **common,
        )
    raise ValueError(
        f"e9.task.source {task_cfg['source']!r}: expected markov or corpus"
    )


@torch.no_grad()
def measure(bert, ids: torch.Tensor, rtol: float) -> pd.DataFrame:
    """E4 energies and ranks of every layer for unpadded sequences ``ids`` (B, n).

    Rows: ``seq``, ``layer``, ``subspace``, ``site``, ``metric``, ``value``; the
    rank metrics (``affine_rank_in``, ``affine_rank_out``, ``effective_rank_out``)
    have subspace and site None.
    """
    bert.eval()
    weights = reachable.model_weights(bert)
    sites = [
        f"blocks.{l}.{s}"
        for l in range(len(weights))
        for s in ("in", *reachable.LAYER_SITES.values())
    ]
    captured = run_and_capture(bert, ids, torch.ones_like(ids), sites)

    rows = []
    for seq, per_site in enumerate(captured):
        per_site = {k: v.cpu() for k, v in per_site.items()}
        for row in reachable.layer_energy_rows(per_site, weights, rtol):
            rows.append(dict(seq=seq, **row))

        # Ranks of each layer's input and output token matrices.
        for l in range(len(weights)):
            m_in = token_metrics(per_site[f"blocks.{l}.in"])
            m_out = token_metrics(per_site[f"blocks.{l}.out"])
            for metric, value in (
                ("affine_rank_in", m_in["affine_rank"]),
                ("affine_rank_out", m_out["affine_rank"]),
                ("effective_rank_out", m_out["effective_rank"]),
            ):
                rows.append(
                    dict(
                        seq=seq,
                        layer=l,
                        subspace=None,
                        site=None,
                        metric=metric,
                        value=float(value),
                    )
                )
    return pd.DataFrame(rows)


def run(
    multiple: int,
    seed: int,
    model_cfg: dict,
    train_cfg: dict,
    task,
    measure_sequences: int,
    device,
    rtol: float = reachable.BASIS_RTOL,
    progress=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one encoder with ``d_ff = multiple * d``; (measurements, history).

    Measurements are ``measure`` rows at ``phase`` init and trained, plus the
    held-out ``accuracy`` and ``loss`` (layer, subspace and site None).
    """
    d, n_heads, n = model_cfg["d"], model_cfg["n_heads"], task.seq_len
    if reachable.dim_bound(n, n_heads, "linear") >= d:
        raise ValueError(
            f"e9: sequences of {n} tokens give n(H+1)+2 = "
            f"{reachable.dim_bound(n, n_heads, 'linear')} >= d = {d}, so T(X) is "
            "all of R^d; shorten e9.task.seq_len or widen e9.model.d"
        )
    enc = tiny.EncoderConfig(
        vocab_size=task.vocab_size,
        d=d,
        n_layers=model_cfg["n_layers"],
        n_heads=n_heads,
        d_ff=multiple * d,
        max_positions=n,
        init_range=model_cfg["init_range"],
        dropout=model_cfg["dropout"],
    )
    model = tiny.build_encoder(enc, seed).to(device)
    ids = task.eval_ids[:measure_sequences].to(device)

    # The same measurements before and after training.
    parts = []
    for phase in ("init", "trained"):
        if phase == "trained":
            history = tiny.train(
                model, task, tiny.TrainConfig(**train_cfg), seed, device, progress
            )
        m = measure(model.bert, ids, rtol)
        scores = tiny.evaluate(model, task, device)
        m = pd.concat(
            [
                m,
                pd.DataFrame(
                    [
                        dict(
                            seq=None,
                            layer=None,
                            subspace=None,
                            site=None,
                            metric=k,
                            value=v,
                        )
                        for k, v in scores.items()
                    ]
                ),
            ],
            ignore_index=True,
        )
        parts.append(m.assign(phase=phase))
    return pd.concat(parts, ignore_index=True), history


# ----------------------------------------------------------------------------
# Summaries and the verdict.


def run_summary(
    metrics: pd.DataFrame,
    containment_subspace: str = "affine",
    generation_subspace: str = "linear",
) -> pd.DataFrame:
    """One value per (phase, quantity) of one run's measurements (``QUANTITIES``)."""
    rows = []
    for phase, m in metrics.groupby("phase"):

        def energy(site, sub, m=m):
            sel = m[
                (m.metric == "energy_outside") & (m.site == site) & (m.subspace == sub)
            ]
            return float(sel["value"].median())

        ranks = m[m.metric.str.startswith(("affine_rank", "effective_rank"))].pivot(
            index=["seq", "layer"], columns="metric", values="value"
        )
        last = ranks.xs(ranks.index.get_level_values("layer").max(), level="layer")
        n = m[(m.metric == "bound") & (m.subspace == "input_span")]["value"].max()
        score = m[m.seq.isna()].set_index("metric")["value"]
        values = {
            "accuracy": float(score["accuracy"]),
            "loss": float(score["loss"]),
            "attn_block_energy_outside": energy("attn_block", containment_subspace),
            "mlp_energy_outside": energy("mlp", generation_subspace),
            "layer_energy_outside": energy("layer", generation_subspace),
            "affine_rank_kept": float(
                (ranks["affine_rank_out"] >= ranks["affine_rank_in"]).mean()
            ),
            "final_affine_rank": float(last["affine_rank_out"].median() / (n - 1)),
            "final_effective_rank": float(last["effective_rank_out"].median()),
        }
        rows += [dict(phase=phase, quantity=q, value=values[q]) for q in QUANTITIES]
    return pd.DataFrame(rows)


def width_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean, seed standard deviation and seed count per (phase, quantity, multiple)."""
    g = summary.groupby(["phase", "quantity", "multiple"])["value"]
    out = g.agg(mean="mean", sd="std", seeds="count").reset_index()
    out["sd"] = out["sd"].fillna(0.0)
    return out


def verdict_c7(summary: pd.DataFrame, cfg: dict) -> Verdict:
    """C7 from the per-run summaries (columns multiple, seed, phase, quantity, value).

    ``cfg`` keys: ``reference_multiple`` (4), ``noise_k``, ``rank_quantity``,
    ``soft_quantities``, ``outside_min``. Rule, after training, for every width
    below the reference: not supported if the layers keep their affine rank in
    every seed at the reference but not at that width, or if its mean MLP
    energy outside T falls below ``outside_min`` while the reference's does not;
    qualified if the reference itself loses rank, or if a soft quantity's mean
    is below the reference's by more than ``noise_k`` times the larger seed
    standard deviation of the two; confirmed otherwise.
    """
    stats = width_table(summary[summary.phase == "trained"]).set_index(
        ["quantity", "multiple"]
    )
    ref, k = cfg["reference_multiple"], cfg["noise_k"]
    multiples = sorted(summary["multiple"].unique())
    narrow = [m for m in multiples if m < ref]
    trained = summary[summary.phase == "trained"]

    def worst(q, m):  # the least favourable seed of a run-level share
        return float(
            trained[(trained.quantity == q) & (trained.multiple == m)]["value"].min()
        )

    rank_q = cfg["rank_quantity"]
    ref_kept = worst(rank_q, ref) >= 1.0
    ref_mlp = stats.loc[("mlp_energy_outside", ref), "mean"]
    fails, lower = [], []
    for m in narrow:
        if ref_kept and worst(rank_q, m) < 1.0:
            fails.append(f"d_ff = {m}d loses affine rank where 4d keeps it")
        mlp = stats.loc[("mlp_energy_outside", m), "mean"]
        if mlp < cfg["outside_min"] <= ref_mlp:
            fails.append(f"the MLP at d_ff = {m}d stops leaving T(X)")
        lower += _lower_beyond_noise(stats, cfg["soft_quantities"], m, ref, k)

    # Quantities that do not decide, compared the same way for the reader.
    others = [
        q
        for q in ("accuracy", "layer_energy_outside", "final_affine_rank")
        if q not in cfg["soft_quantities"] and (q, ref) in stats.index
    ]
    informative = [
        line for m in narrow for line in _lower_beyond_noise(stats, others, m, ref, k)
    ]

    # The task score: reported, not deciding (C7 is about rank).
    acc = {
        int(m): f"{stats.loc[('accuracy', m), 'mean']:.3f} ± "
        f"{stats.loc[('accuracy', m), 'sd']:.3f}"
        for m in multiples
    }
    evidence = {
        "reference_multiple": ref,
        "noise_k": k,
        f"{rank_q}_worst_seed": {int(m): worst(rank_q, m) for m in multiples},
        **{
            f"{q}_mean": {int(m): float(stats.loc[(q, m), "mean"]) for m in multiples}
            for q in ("mlp_energy_outside", *cfg["soft_quantities"])
        },
        "accuracy_mean_sd": acc,
        "lower_beyond_seed_noise": lower,
        "not_deciding_lower_beyond_seed_noise": informative,
    }
    if fails:
        return Verdict(
            "C7", "not supported", "; ".join(fails) + ".", evidence, experiments=["E9"]
        )
    if not ref_kept or lower:
        why = (
            [f"rank is not kept even at {ref}d, so the width is not what keeps it"]
            if not ref_kept
            else []
        ) + lower
        return Verdict(
            "C7",
            "qualified",
            f"No width below {ref}d fails where {ref}d succeeds; but "
            + "; ".join(why)
            + ".",
            evidence,
            experiments=["E9"],
        )
    return Verdict(
        "C7",
        "confirmed",
        f"Every width from {min(multiples)}d keeps the layers' affine rank in every "
        f"seed, and no rank or energy measure at widths below {ref}d is lower than "
        f"at {ref}d beyond seed noise.",
        evidence,
        experiments=["E9"],
    )


def _lower_beyond_noise(stats, quantities, m, ref, k) -> list[str]:
    """Quantities whose mean at width m is below the reference's by > k x seed sd."""
    out = []
    for q in quantities:
        a, b = stats.loc[(q, m)], stats.loc[(q, ref)]
        noise = max(a["sd"], b["sd"])
        if a["mean"] - b["mean"] < -k * noise:
            out.append(
                f"{q} at {m}d ({a['mean']:.4g}) < {ref}d ({b['mean']:.4g}) "
                f"by more than {k:g} x {noise:.2g}"
            )
    return out
