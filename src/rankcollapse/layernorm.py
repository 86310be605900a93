"""LayerNorm in matrix form and what it does to the matrix and affine rank of X.

``LN(X) = D^-1 X P Gamma + 1 beta^T`` with ``P = I - 1 1^T / d`` (per-token
centring), ``D = diag(sqrt(var_i + eps))`` (per-token standard deviations) and
``Gamma = diag(gamma)``; measured at every LayerNorm of real models and on
synthetic families of token sets (experiment E3, claim C1).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from rankcollapse import metrics
from rankcollapse.capture import run_and_capture
from rankcollapse.corpus import batches
from rankcollapse.verdict import Verdict

log = logging.getLogger(__name__)

RANKS = ("rank", "affine_rank")  # metric names of the matrix and affine rank
SIDES = ("in", "out")  # the LayerNorm's input X and output LN(X)
EPS64 = float(np.finfo(np.float64).eps)

# ----------------------------------------------------------------------------
# The matrix form.


@functools.lru_cache(maxsize=8)
def centring_matrix(d: int) -> torch.Tensor:
    """``P = I - 1 1^T / d`` (d, d), float64: right-multiplying a row subtracts
    its mean. Cached per d; do not modify the returned tensor."""
    return torch.eye(d, dtype=torch.float64) - 1.0 / d


def layernorm_matrix_form(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float
) -> torch.Tensor:
    """``D^-1 X P Gamma + 1 beta^T`` for ``x`` (n, d), in float64.

    The diagonal factors are applied as what they are, a scaling of rows
    (``D^-1``) and of columns (``Gamma``). Worked by hand, d = 2, eps = 0,
    gamma = 1, beta = 0: the token (3, 1) has ``x P = (1, -1)``, variance 1 and
    ``D = 1``: LN gives (1, -1).
    """
    x = x.to(torch.float64)

    # per-token centring: rows of X P have zero mean
    xp = x @ centring_matrix(x.shape[1])  # (n, d)

    # D: per-token standard deviations (biased variance, eps inside the root)
    sigma = torch.sqrt((xp**2).mean(dim=1, keepdim=True) + eps)  # (n, 1)

    # D^-1 X P Gamma, then the bias added to every token
    out = (xp / sigma) * gamma.to(torch.float64)  # (n, d)
    return out + beta.to(torch.float64)


# ----------------------------------------------------------------------------
# Ranks at every tolerance, from one pair of spectra.


def rank_record(
    x: torch.Tensor, rtols: list[float], spectra=None, float64: bool = False
) -> dict:
    """Matrix and affine rank of ``x`` (n, d) at the default and each extra rtol.

    Keys ``rank``, ``affine_rank`` (default rtol) and ``rank@<rtol>``,
    ``affine_rank@<rtol>``, as in ``metrics.token_metrics``; with ``float64``
    also ``rank@float64``, ``affine_rank@float64`` at ``max(n, d) * eps(float64)``
    (the exact rank of a float64 construction, up to round-off); and the
    Frobenius residual ratio ``res_ratio_fro``. ``spectra``:
    ``metrics.spectra(x)`` when already computed.
    """
    n, d = x.shape
    s, sc = spectra if spectra is not None else metrics.spectra(x)  # / sigma_1
    one = torch.ones((), dtype=s.dtype)
    out = {
        "rank": metrics.rank_from_spectrum(s, one, metrics.default_rtol(n, d)),
        "affine_rank": metrics.rank_from_spectrum(sc, one, metrics.default_rtol(n, d)),
    }
    for rtol in rtols:
        out[f"rank@{rtol:g}"] = metrics.rank_from_spectrum(s, one, rtol)
        out[f"affine_rank@{rtol:g}"] = metrics.rank_from_spectrum(sc, one, rtol)
    if float64:
        rtol = max(n, d) * EPS64
        out["rank@float64"] = metrics.rank_from_spectrum(s, one, rtol)
        out["affine_rank@float64"] = metrics.rank_from_spectrum(sc, one, rtol)
    out = {k: float(v) for k, v in out.items()}
    out["res_ratio_fro"] = float(torch.sqrt((sc**2).sum() / (s**2).sum()))
    return out


def tolerance_of(metric: str) -> str:
    """``rank@0.001`` -> ``0.001``; ``rank`` -> ``default``."""
    return metric.split("@", 1)[1] if "@" in metric else "default"


def rank_of(metric: str) -> str:
    """``affine_rank@0.001`` -> ``affine``; ``rank`` -> ``matrix``."""
    return "affine" if metric.startswith("affine_rank") else "matrix"


def is_rank_metric(metric: str) -> bool:
    return metric.split("@", 1)[0] in RANKS


# ----------------------------------------------------------------------------
# Real sites: every LayerNorm of a BERT-family model.


@dataclass
class LNSite:
    """One LayerNorm: its name, depth, the sites it reads and writes, the module.

    ``layer`` is 0 for the embedding LayerNorm and l + 1 for the LayerNorms of
    block l, so that it counts the blocks the token set has passed through.
    """

    name: str
    layer: int
    kind: str
    site_in: str
    site_out: str
    module: torch.nn.LayerNorm


def ln_sites(model) -> list[LNSite]:
    """Every LayerNorm of a ``BertModel``, in forward order."""
    sites = [
        LNSite(
            "embed.ln",
            0,
            "embed",
            "embed.ln.in",
            "embed.out",
            model.embeddings.LayerNorm,
        )
    ]
    for l, layer in enumerate(model.encoder.layer):
        p = f"blocks.{l}."
        sites += [
            LNSite(
                p + "ln1",
                l + 1,
                "ln1",
                p + "ln1.in",
                p + "ln1.out",
                layer.attention.output.LayerNorm,
            ),
            LNSite(
                p + "ln2", l + 1, "ln2", p + "ln2.in", p + "out", layer.output.LayerNorm
            ),
        ]
    return sites


def ln_params(model, model_name: str, zero_rtol: float) -> pd.DataFrame:
    """Per LayerNorm: d, eps, the smallest |gamma_k|, how many are near zero, |beta|.

    A ``gamma_k`` counts as near zero when ``|gamma_k| <= zero_rtol * max|gamma|``.
    ``beta_off_image`` is the fraction of beta outside the image of ``P Gamma``,
    where every bias-free output lies: ``|cos(beta, Gamma^-1 1)|`` when no gamma
    is near zero, else the norm of beta on the near-zero coordinates over
    ``|beta|``. Where it is small, beta cannot give back a lost direction.
    """
    rows = []
    for site in ln_sites(model):
        gamma = site.module.weight.detach().double()
        g = gamma.abs()
        b = site.module.bias.detach().double()
        zero = g <= zero_rtol * g.max()
        if zero.any():
            off = b[zero].norm() / b.norm().clamp_min(1e-300)
        else:
            normal = 1.0 / gamma  # Gamma^-1 1, orthogonal to the image
            off = (b @ normal).abs() / (b.norm() * normal.norm()).clamp_min(1e-300)
        rows.append(
            {
                "model": model_name,
                "ln": site.name,
                "layer": site.layer,
                "kind": site.kind,
                "d": g.numel(),
                "eps": site.module.eps,
                "gamma_min_abs": float(g.min()),
                "gamma_max_abs": float(g.max()),
                "gamma_near_zero": int(zero.sum()),
                "beta_norm": float(b.norm()),
                "beta_off_image": float(off),
            }
        )
    return pd.DataFrame(rows)


def real_site_ranks(
    model,
    model_name: str,
    seqs: list,
    batch_size: int,
    rtols: list[float],
    setting: str,
    spectra_sequences: int = 0,
    pad_id: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ranks of the input and output of every LayerNorm, for every sequence.

    ``beta = model``: the output the model computed (float32, captured).
    ``beta = zero``: the output recomputed from the captured input in float64 with
    ``layernorm_matrix_form`` and ``beta = 0``. Also per site: ``form_err``, the
    largest |difference| between the captured output and the matrix form with
    the model's beta. Returns the long rank table and the spectra of the first
    ``spectra_sequences`` sequences (all of them when negative).
    """
    sites = ln_sites(model)
    names = [s for site in sites for s in (site.site_in, site.site_out)]
    params = {
        site.name: (
            site.module.weight.detach().double().cpu(),
            site.module.bias.detach().double().cpu(),
            site.module.eps,
        )
        for site in sites
    }
    rows, spectra_rows = [], []
    n_batches = math.ceil(len(seqs) / batch_size)
    for seq_ids, ids, mask in tqdm(
        batches(seqs, batch_size, pad_id),
        total=n_batches,
        desc=f"{model_name} {setting}",
    ):
        captured = run_and_capture(model, ids, mask, sites=names)
        for seq_id, states in zip(seq_ids, captured, strict=True):
            keep_spectra = spectra_sequences < 0 or seq_id < spectra_sequences
            for site in sites:
                gamma, beta, eps = params[site.name]
                x = states[site.site_in].double().cpu()  # (n, d)
                y = states[site.site_out].double().cpu()  # (n, d)

                # the matrix form, with the model's beta (check) and with beta = 0
                y_form = layernorm_matrix_form(x, gamma, beta, eps)
                y_zero = layernorm_matrix_form(x, gamma, torch.zeros_like(beta), eps)

                key = {
                    "model": model_name,
                    "setting": setting,
                    "ln": site.name,
                    "layer": site.layer,
                    "kind": site.kind,
                    "seq": seq_id,
                    "n": x.shape[0],
                    "d": x.shape[1],
                }
                rows.append(
                    {
                        **key,
                        "beta": "model",
                        "side": "check",
                        "metric": "form_err",
                        "value": float((y - y_form).abs().max()),
                    }
                )

                # ranks of the input (shared) and of both outputs, one SVD pair each
                spec = {
                    side: metrics.spectra(m)
                    for side, m in (("in", x), ("out model", y), ("out zero", y_zero))
                }
                rec_in = rank_record(x, rtols, spec["in"])
                for beta_kind, y_out in (("model", y), ("zero", y_zero)):
                    s_out = spec[f"out {beta_kind}"]
                    rec_out = rank_record(y_out, rtols, s_out)
                    for side, rec in (("in", rec_in), ("out", rec_out)):
                        rows += [
                            {
                                **key,
                                "beta": beta_kind,
                                "side": side,
                                "metric": m,
                                "value": v,
                            }
                            for m, v in rec.items()
                        ]
                    if keep_spectra:
                        spectra_rows += _spectrum_rows(key, beta_kind, "out", s_out)
                if keep_spectra:
                    spectra_rows += _spectrum_rows(key, "model", "in", spec["in"])
    return pd.DataFrame(rows), pd.DataFrame(spectra_rows)


def _spectrum_rows(key: dict, beta: str, side: str, spectra) -> list[dict]:
    out = []
    for centred, values in zip((False, True), spectra, strict=True):
        out += [
            {
                **key,
                "beta": beta,
                "side": side,
                "centred": centred,
                "index": i + 1,
                "value": float(v),
            }
            for i, v in enumerate(values)
        ]
    return out


def count_changes(ranks: pd.DataFrame) -> pd.DataFrame:
    """Per (model, setting, kind, beta, rank, tolerance): preserved/raised/lowered.

    A LayerNorm application (one site, one sequence) counts once; ``max_change``
    is the largest |output rank - input rank| seen.
    """
    diff = _in_out(
        ranks[ranks.metric.map(is_rank_metric)],
        ["model", "setting", "ln", "layer", "kind", "seq", "n", "d", "beta"],
    )
    diff["rank"] = diff.metric.map(rank_of)
    diff["tolerance"] = diff.metric.map(tolerance_of)
    diff["change"] = diff["out"] - diff["in"]
    keys = ["model", "setting", "kind", "beta", "rank", "tolerance"]
    out = (
        diff.groupby(keys, sort=False)
        .agg(
            total=("change", "size"),
            preserved=("change", lambda c: int((c == 0).sum())),
            raised=("change", lambda c: int((c > 0).sum())),
            lowered=("change", lambda c: int((c < 0).sum())),
            max_change=("change", lambda c: int(c.abs().max())),
            n_min=("n", "min"),
            n_max=("n", "max"),
            d=("d", "first"),
        )
        .reset_index()
    )
    return out


def form_check(ranks: pd.DataFrame) -> pd.DataFrame:
    """Largest |captured output - matrix form| per model and LayerNorm kind."""
    err = ranks[ranks.metric == "form_err"]
    return (
        err.groupby(["model", "kind"], sort=False)
        .agg(layernorms=("ln", "nunique"), max_abs_err=("value", "max"))
        .reset_index()
    )


def _in_out(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Pivot the ``side`` column into ``in`` and ``out`` columns, per metric."""
    wide = df.pivot_table(
        index=[*keys, "metric"], columns="side", values="value", aggfunc="first"
    ).reset_index()
    wide.columns.name = None
    return wide


# ----------------------------------------------------------------------------
# Synthetic families (float64).

FAMILIES = {
    "F1": "generic points, Gaussian entries",
    "F2": "affine rank r, hull through the origin: x_i = a_i B",
    "F3": "affine rank r, hull off the origin: x_i = c + a_i B",
    "F4": "differences along the all-ones vector: x_i = x_1 + t_i 1",
    "F5": "nearly collapsed off the origin: x_i = c + delta a_i B",
    "F6": "points on r rays from the origin: x_i = s_i b_(i mod r), s_i > 0",
    "F7": "differences along e_1 - e_2: x_i = x_1 + t_i (e_1 - e_2)",
}


def family(
    name: str, n: int, d: int, r: int, rng: np.random.Generator, delta: float = 1.0
) -> torch.Tensor:
    """Draw the token set ``X`` (n, d) of synthetic family ``name`` (see FAMILIES).

    ``a_i`` (r,), ``B`` (r, d), ``c`` (d,) and ``t_i`` are standard Gaussian;
    ``s_i`` is uniform on [0.5, 2]. F7's direction ``e_1 - e_2`` is the
    zero-sum direction on the two coordinates that the ``zeros`` gamma sets to 0.
    """

    def gauss(*shape):
        return torch.from_numpy(rng.standard_normal(shape))

    if name == "F1":
        return gauss(n, d)
    if name == "F2":
        return gauss(n, r) @ gauss(r, d)
    if name == "F3":
        return gauss(1, d) + gauss(n, r) @ gauss(r, d)
    if name == "F4":
        return gauss(1, d) + gauss(n, 1) * torch.ones(1, d, dtype=torch.float64)
    if name == "F5":
        return gauss(1, d) + delta * gauss(n, r) @ gauss(r, d)
    if name == "F6":
        rays = gauss(r, d)
        scale = torch.from_numpy(rng.uniform(0.5, 2.0, size=(n, 1)))
        return scale * rays[torch.arange(n) % r]
    if name == "F7":
        e = torch.zeros(1, d, dtype=torch.float64)
        e[0, 0], e[0, 1] = 1.0, -1.0
        return gauss(1, d) + gauss(n, 1) * e
    raise ValueError(f"unknown family {name!r}; expected one of {sorted(FAMILIES)}")


def make_gamma(kind: str, d: int, zeros: int, rng: np.random.Generator):
    """``ones``; ``random`` (|gamma_k| uniform on [0.5, 1.5], random sign);
    ``zeros`` (``random`` with its first ``zeros`` entries set to 0)."""
    if kind == "ones":
        return torch.ones(d, dtype=torch.float64)
    g = rng.uniform(0.5, 1.5, size=d) * rng.choice([-1.0, 1.0], size=d)
    if kind == "zeros":
        g[:zeros] = 0.0
    elif kind != "random":
        raise ValueError(f"unknown gamma {kind!r}; expected ones, random or zeros")
    return torch.from_numpy(g)


def n_regime(n: int, d: int) -> str:
    return "n < d" if n < d else ("n = d" if n == d else "n > d")


def synthetic_ranks(d: int, cfg: dict, rtols: list[float]) -> pd.DataFrame:
    """Ranks of input and output for every family, n, gamma, beta and draw at ``d``.

    F5 runs at ``cfg["f5"]["n"]`` tokens over its grid of delta and also records
    ``sigma_r`` and ``sigma_r+1`` (centred spectrum over sigma_1) of each side.
    One eps only: F6's merge, exact at eps = 0, shows as an eps / sigma^2 spread.
    """
    r, eps = cfg["r"], cfg["eps"]
    cases = []
    for fam in cfg["families"]:
        if fam == "F5":
            f5 = cfg["f5"]
            deltas = np.logspace(*f5["log10_delta"], f5["points"])
            cases += [(fam, f5["n"], float(delta)) for delta in deltas]
        else:
            cases += [
                (fam, max(2, round(f * d)), float("nan")) for f in cfg["n_fractions"]
            ]

    log.info(
        "d = %d: %d cases x %d draws x %d gammas",
        d,
        len(cases),
        cfg["draws"],
        len(cfg["gammas"]),
    )
    rows = []
    fam_index = {name: i for i, name in enumerate(FAMILIES)}
    for fam, n, delta in tqdm(cases, desc=f"synthetic d={d}"):
        for draw in range(cfg["draws"]):
            for g_index, g_kind in enumerate(cfg["gammas"]):
                # one seed per (d, family, n, draw, gamma), the same for every
                # delta, so that F5's curves follow one token set as delta shrinks
                seed = [cfg["seed"], d, fam_index[fam], n, draw, g_index]
                rng = np.random.default_rng(seed)
                x = family(fam, n, d, r, rng, delta)  # (n, d)
                gamma = make_gamma(g_kind, d, cfg["gamma_zeros"], rng)
                betas = {
                    "zero": torch.zeros(d, dtype=torch.float64),
                    "random": cfg["beta_scale"]
                    * torch.from_numpy(rng.standard_normal(d)),
                }

                key = {
                    "d": d,
                    "family": fam,
                    "n": n,
                    "r": r,
                    "delta": delta,
                    "gamma": g_kind,
                    "draw": draw,
                    "n_regime": n_regime(n, d),
                }
                rec_in = _synthetic_record(x, rtols, r, fam == "F5")
                for b_kind, beta in betas.items():
                    y = layernorm_matrix_form(x, gamma, beta, eps)
                    rec_out = _synthetic_record(y, rtols, r, fam == "F5")
                    for side, rec in (("in", rec_in), ("out", rec_out)):
                        rows += [
                            {
                                **key,
                                "beta": b_kind,
                                "side": side,
                                "metric": m,
                                "value": v,
                            }
                            for m, v in rec.items()
                        ]
    return pd.DataFrame(rows)


def _synthetic_record(x, rtols, r, with_sigmas: bool) -> dict:
    spectra = metrics.spectra(x)
    rec = rank_record(x, rtols, spectra, float64=True)
    if with_sigmas:
        sc = spectra[1]
        rec["sigma_r"] = float(sc[r - 1])  # the smallest of the r directions
        rec["sigma_r+1"] = float(sc[r])  # the direction that appears or vanishes
    return rec


def synthetic_table(
    syn: pd.DataFrame,
    families: list[str] | None = None,
    tolerances=("default", "float64"),
) -> pd.DataFrame:
    """One row per (tolerance, d, family, n, gamma, beta): ranks in and out.

    ``tolerance`` is ``default`` (max(n, d) eps(float32)), ``float64``
    (max(n, d) eps(float64)) or an extra rtol. ``agree`` says whether every draw
    gave the same ranks; the shown ranks are those of draw 0.
    """
    keys = ["d", "family", "n", "n_regime", "delta", "gamma", "beta", "draw"]
    group = ["tolerance", *(k for k in keys if k != "draw")]
    rank_cols = [f"{m}_{s}" for m in RANKS for s in (*SIDES, "change")]
    df = syn[syn.metric.map(is_rank_metric)]
    if families is not None:
        df = df[df.family.isin(families)]
    df = df.assign(
        tolerance=df.metric.map(tolerance_of), metric=df.metric.str.split("@").str[0]
    )
    df = df[df.tolerance.isin(tolerances)]

    # one row per case and draw, columns <rank>_in, <rank>_out (NaN delta kept)
    wide = df.set_index(["tolerance", *keys, "metric", "side"])["value"].unstack(
        ["metric", "side"]
    )
    wide.columns = [f"{m}_{s}" for m, s in wide.columns]
    wide = wide.reset_index()
    for m in RANKS:
        wide[f"{m}_change"] = wide[f"{m}_out"] - wide[f"{m}_in"]

    # draw 0's ranks, and whether every draw agrees with them
    agree = (
        wide.groupby(group, dropna=False)[rank_cols]
        .nunique()
        .le(1)
        .all(axis=1)
        .rename("agree")
    )
    out = wide[wide.draw == 0].merge(agree.reset_index(), on=group, how="left")
    out = out[[*group, *rank_cols, "agree"]]
    out[rank_cols] = out[rank_cols].astype(int)
    return out.sort_values(group, ignore_index=True)


def f5_table(syn: pd.DataFrame) -> pd.DataFrame:
    """F5 per (d, gamma, beta, delta): median over draws of sigma_r, sigma_r+1."""
    df = syn[(syn.family == "F5") & syn.metric.isin(["sigma_r", "sigma_r+1"])]
    out = (
        df.groupby(["d", "n", "r", "gamma", "beta", "delta", "metric", "side"])["value"]
        .median()
        .reset_index()
    )
    return out


def f5_slopes(syn: pd.DataFrame, floor: float) -> pd.DataFrame:
    """Log-log slope of each F5 singular value against delta, over values > floor.

    Also ``delta_raised_from_<tolerance>``: the smallest delta from which on, up
    to the largest, the output's affine rank exceeds the input's at that
    tolerance (NaN when it does not at the largest delta).
    """
    sig = f5_table(syn)
    rows = []
    keys = ["d", "n", "r", "gamma", "beta"]
    for key, grp in sig.groupby(keys):
        rec = dict(zip(keys, key, strict=True))
        for (metric, side), g in grp.groupby(["metric", "side"]):
            g = g[g.value > floor]
            slope = (
                np.polyfit(np.log10(g.delta), np.log10(g.value), 1)[0]
                if len(g) >= 2
                else float("nan")
            )
            rec[f"slope_{metric}_{side}"] = slope
            rec[f"points_{metric}_{side}"] = len(g)
        rows.append(rec)
    out = pd.DataFrame(rows)

    # walk down from the largest delta while the affine rank stays raised
    ranks = synthetic_table(syn, ["F5"])
    for tol, by_tol in ranks.groupby("tolerance"):
        raised_from = {}
        for key, g in by_tol.groupby(["d", "gamma", "beta"]):
            g = g.sort_values("delta", ascending=False)
            raised = (g.affine_rank_change > 0).to_numpy()
            k = len(raised) if raised.all() else int(np.argmin(raised))
            raised_from[key] = g.delta.iloc[k - 1] if k > 0 else float("nan")
        out[f"delta_raised_from_{tol}"] = [
            raised_from.get((r.d, r.gamma, r.beta), np.nan) for r in out.itertuples()
        ]
    return out


# ----------------------------------------------------------------------------
# The verdict.

PARTS = {
    # part: (rank, the beta variants it covers)
    "affine rank": ("affine_rank", ("model", "zero", "random")),
    "matrix rank, beta = 0": ("rank", ("zero",)),
}
ORDER = ("confirmed", "qualified", "not supported")


def verdict_c1(
    real_counts: pd.DataFrame, synthetic: pd.DataFrame, cfg: dict
) -> Verdict:
    """C1 from the real-site counts (default rtol) and the synthetic table (at
    ``cfg["synthetic_tolerance"]``).

    For each part (affine rank, any beta; matrix rank, beta = 0): *not supported*
    when more than ``cfg["max_real_change_fraction"]`` of the LayerNorm
    applications on the configured corpus change the rank; else *qualified* when
    any synthetic case or any real sequence changes it; else *confirmed*.
    The claim gets the worst of its two parts.
    """
    evidence, outcomes, lines = {}, [], []
    threshold = cfg["max_real_change_fraction"]
    for part, (metric, betas) in PARTS.items():
        rank = rank_of(metric)
        real = real_counts[
            (real_counts.tolerance.astype(str) == "default")
            & (real_counts["rank"] == rank)
            & real_counts.beta.isin(betas)
        ]
        corpus = real[real.setting == "corpus"]
        total = int(corpus.total.sum())
        changed = int(corpus.raised.sum() + corpus.lowered.sum())
        fraction = changed / max(total, 1)

        # failing cases: synthetic rows and real sequences (corpus and long)
        syn = synthetic[
            synthetic.beta.isin(betas)
            & (synthetic.tolerance == cfg["synthetic_tolerance"])
        ]
        syn_fail = syn[syn[f"{metric}_change"] != 0]
        cases = _describe_failures(syn_fail, metric) + _describe_real(real)

        if total == 0:
            raise ValueError(f"no real-site counts on the corpus for {part}")
        if fraction > threshold:
            outcome = "not supported"
        elif cases:
            outcome = "qualified"
        else:
            outcome = "confirmed"
        outcomes.append(outcome)
        evidence[f"{part}: real applications changed"] = f"{changed} of {total}"
        evidence[f"{part}: synthetic cases changed"] = f"{len(syn_fail)} of {len(syn)}"
        held = sorted(set(syn.family) - set(syn_fail.family))
        evidence[f"{part}: families never changed"] = ", ".join(held) or "none"
        if cases:
            evidence[f"{part}: fails in"] = "; ".join(cases)
        lines.append(
            f"{part}: {outcome} ({changed} of {total} LayerNorm applications on "
            f"the corpus change it; {len(cases)} failing condition(s) in the "
            "evidence)"
        )
        if len(syn_fail):
            ex = syn_fail.iloc[0]
            evidence[f"{part}: example"] = (
                f"{ex.family}, d = {ex.d}, n = {ex.n}, gamma = {ex.gamma}, "
                f"beta = {ex.beta}: {int(ex[f'{metric}_in'])} -> "
                f"{int(ex[f'{metric}_out'])}"
            )

    worst = max(outcomes, key=ORDER.index)
    summary = "; ".join(lines) + "."
    return Verdict("C1", worst, summary, evidence=evidence, experiments=["E3"])


def _describe_failures(fail: pd.DataFrame, metric: str) -> list[str]:
    """One line per (family, change): the gammas where it is seen, per n regime
    (per range of delta for F5)."""
    out = []
    for (fam, change), g in fail.groupby(["family", f"{metric}_change"], sort=True):
        if fam == "F5":
            lo, hi = g.delta.min(), g.delta.max()
            where = [(f"delta {lo:.2g}" + (f" to {hi:.2g}" if hi > lo else ""), g)]
        else:
            where = list(g.groupby("n_regime", sort=True))
        gammas = {w: ", ".join(sorted(gw.gamma.unique())) for w, gw in where}
        if len(set(gammas.values())) == 1:  # the same gammas in every regime
            text = f"{', '.join(gammas)}; gamma {next(iter(gammas.values()))}"
        else:
            text = "; ".join(f"{w}: gamma {gs}" for w, gs in gammas.items())
        out.append(f"{fam} {int(change):+d} ({text})")
    return out


def _describe_real(fail: pd.DataFrame) -> list[str]:
    """One line per (model, setting) with a change: applications lowered, raised."""
    out = []
    for (model, setting), g in fail.groupby(["model", "setting"], sort=True):
        if g.lowered.sum() + g.raised.sum() == 0:
            continue
        out.append(
            f"real {model} ({setting}, n = {g.n_min.min()}-{g.n_max.max()}, "
            f"d = {g.d.iloc[0]}): {g.lowered.sum()} lowered, {g.raised.sum()} "
            f"raised of {g.total.sum()}"
        )
    return out


# ----------------------------------------------------------------------------
# Figures (through rankcollapse.plotting: one style, PNG and SVG side by side).


def plot_f5(f5: pd.DataFrame, slopes: pd.DataFrame, png_path) -> None:
    """sigma_r and sigma_r+1 of the centred set over sigma_1, against delta."""
    from rankcollapse import plotting

    plt, sns = plotting.plt, plotting.sns
    df = f5[f5.beta == "zero"].copy()
    side = df.side.map({"in": "input X", "out": "LN(X)"})
    df["series"] = side + ", " + df.metric
    dims = sorted(df.d.unique())
    fig, axes = plt.subplots(
        1, len(dims), figsize=(4.8 * len(dims), 3.8), squeeze=False, sharey=True
    )
    for ax, d in zip(axes[0], dims, strict=True):
        sub = df[df.d == d]
        sns.lineplot(
            sub,
            x="delta",
            y="value",
            hue="series",
            style="gamma",
            markers=True,
            ax=ax,
            errorbar=None,
            legend=ax is axes[0, -1],
        )
        s = slopes[(slopes.d == d) & (slopes.beta == "zero")]
        fitted = ", ".join(f"{v:.2f}" for v in s["slope_sigma_r+1_out"])
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="delta",
            ylabel="singular value / sigma_1",
            title=f"F5, d = {d}, n = {sub.n.iloc[0]}, r = {sub.r.iloc[0]}\n"
            f"log-log slope of LN(X) sigma_r+1: {fitted}",
        )
    sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1))
    plotting.save(fig, png_path)


def plot_synthetic(table: pd.DataFrame, tolerance: str, png_path) -> None:
    """Heat map of rank change (output - input) per family and n, by gamma/beta."""
    from rankcollapse import plotting

    plt, sns = plotting.plt, plotting.sns
    df = table[(table.family != "F5") & (table.tolerance == tolerance)].copy()
    df["case"] = df.family + ", n=" + df.n.astype(str)
    df["variant"] = "gamma " + df.gamma + ", beta " + df.beta
    dims = sorted(df.d.unique())
    height = 0.22 * df.case.nunique() + 1.8
    fig, axes = plt.subplots(
        len(dims), 2, figsize=(10, height * len(dims)), squeeze=False
    )
    for row, d in enumerate(dims):
        sub = df[df.d == d]
        order = list(sub.drop_duplicates("case").sort_values(["family", "n"]).case)
        for col, metric in enumerate(RANKS):
            grid = sub.pivot_table(
                index="case",
                columns="variant",
                values=f"{metric}_change",
                aggfunc="first",
            )
            ax = axes[row, col]
            sns.heatmap(
                grid.loc[order],
                ax=ax,
                cmap="RdBu_r",
                center=0,
                vmin=-3,
                vmax=3,
                annot=True,
                fmt=".0f",
                cbar=False,
                annot_kws={"size": 7},
            )
            name = "affine rank" if metric == "affine_rank" else "matrix rank"
            ax.set(
                title=f"{name}: LN(X) - X, d = {d}, rtol {tolerance}",
                xlabel="",
                ylabel="",
            )
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    plotting.save(fig, png_path)


def plot_real_spectra(spectra: pd.DataFrame, ln: str, png_path) -> None:
    """Centred spectra of one LayerNorm's input and output, per model and setting."""
    from rankcollapse import plotting

    sns = plotting.sns
    df = spectra[(spectra.ln == ln) & spectra.centred].copy()
    first = df.groupby(["model", "setting"]).seq.transform("min")
    df = df[df.seq == first]
    df["series"] = df.side.map({"in": "input X", "out": "LN(X)"}) + df.beta.map(
        {"model": "", "zero": ", beta = 0"}
    )
    df["panel"] = (
        df.model
        + ", "
        + df.setting
        + ", n = "
        + df.n.astype(str)
        + ", d = "
        + df.d.astype(str)
    )
    g = sns.relplot(
        df,
        x="index",
        y="value",
        hue="series",
        style="series",
        col="panel",
        col_wrap=2,
        kind="line",
        height=3.0,
        aspect=1.3,
        facet_kws={"sharex": False, "sharey": True},
    )
    g.set(yscale="log")
    g.set_axis_labels("index i", "sigma_i(X - 1 xbar^T) / sigma_1(X)")
    g.set_titles("{col_name}")
    g.figure.suptitle(f"LayerNorm {ln}: centred spectra", y=1.02)
    plotting.save(g.figure, png_path)
