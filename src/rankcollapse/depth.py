"""E1, rank collapse in depth: the model's own layers rewired into variants.

Each *variant* rebuilds one block from the layer's own modules (weights
untouched), starting from the embedding output X0; ``MHA(X)`` is the mixed
output, after W_O with b_O::

    attn          X <- MHA(X)
    attn+ln       X <- LN1(MHA(X))
    attn+mlp      X <- LN2(MLP(LN1(MHA(X))))
    attn+res      X <- X + MHA(X)
    attn+res+ln   X <- LN1(X + MHA(X))
    full          X <- layer(X)                  (the library's own BertLayer)

Dong et al.'s released surgeries replace modules inside the library model and run
its own forward pass; ``dong:*`` variants do the same here.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn

from .metrics import spectra, token_metrics
from .verdict import Verdict

VARIANTS = ("attn", "attn+ln", "attn+mlp", "attn+res", "attn+res+ln", "full")
DONG_SURGERIES = ("san", "san+mlp", "san+skip")


def additive_mask(attention_mask: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """(B, n) 0/1 mask -> (B, 1, 1, n) additive mask for eager attention."""
    m = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - m) * torch.finfo(dtype).min


def mha(layer, x: torch.Tensor, mask4: torch.Tensor) -> torch.Tensor:
    """Mixed output ``sum_h A_h X W_V^h W_O^h + b`` of a BertLayer: (B, n, d)."""
    z, _ = layer.attention.self(x, attention_mask=mask4)
    return layer.attention.output.dense(z)


def block(layer, x: torch.Tensor, mask4: torch.Tensor, variant: str):
    """One block of ``variant`` built from ``layer``'s own modules."""
    ln1 = layer.attention.output.LayerNorm
    ln2 = layer.output.LayerNorm

    def mlp(h):
        return layer.output.dense(layer.intermediate(h))

    if variant == "full":
        return layer(x, mask4)
    if variant == "attn":
        return mha(layer, x, mask4)
    if variant == "attn+ln":
        return ln1(mha(layer, x, mask4))
    if variant == "attn+mlp":
        return ln2(mlp(ln1(mha(layer, x, mask4))))
    if variant == "attn+res":
        return x + mha(layer, x, mask4)
    if variant == "attn+res+ln":
        return ln1(x + mha(layer, x, mask4))
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


@torch.no_grad()
def run_variant(model, input_ids, attention_mask, variant: str) -> torch.Tensor:
    """States of every depth for ``variant``: (L + 1, B, n, d), index 0 is X0."""
    device = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    x = model.embeddings(input_ids=input_ids)
    mask4 = additive_mask(attention_mask)
    states = [x]
    for layer in model.encoder.layer:
        x = block(layer, x, mask4, variant)
        states.append(x)
    return torch.stack(states)


# ----------------------------------------------------------------------------
# Dong et al.'s surgeries: modules swapped inside the library model.


class _SelfOutputNoSkip(nn.Module):
    """``LN1(dense(z))``: the attention sub-block without its skip connection."""

    def __init__(self, original):
        super().__init__()
        self.dense, self.LayerNorm = original.dense, original.LayerNorm

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dense(hidden_states))


class _OutputNoSkip(nn.Module):
    """``LN2(dense(h))``: the MLP sub-block without its skip connection."""

    def __init__(self, original):
        super().__init__()
        self.dense, self.LayerNorm = original.dense, original.LayerNorm

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dense(hidden_states))


class _Identity(nn.Module):
    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


def dong_surgery(model, surgery: str):
    """A copy of ``model`` with Dong et al.'s surgery applied to every layer.

    ``san``: no skip around attention, MLP removed (LN1 kept);
    ``san+mlp``: no skip connections anywhere; ``san+skip``: MLP removed.
    """
    if surgery not in DONG_SURGERIES:
        raise ValueError(f"unknown surgery {surgery!r}; expected {DONG_SURGERIES}")
    model = copy.deepcopy(model)
    for layer in model.encoder.layer:
        if surgery in ("san", "san+mlp"):
            layer.attention.output = _SelfOutputNoSkip(layer.attention.output)
        if surgery in ("san", "san+skip"):
            layer.intermediate = _Identity()
            layer.output = _Identity()
        else:
            layer.output = _OutputNoSkip(layer.output)
    return model


@torch.no_grad()
def run_library(model, input_ids, attention_mask) -> torch.Tensor:
    """The library's own hidden states: (L + 1, B, n, d)."""
    device = next(model.parameters()).device
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        output_hidden_states=True,
    )
    return torch.stack(out.hidden_states)


# ----------------------------------------------------------------------------
# Tables.


def depth_rows(states, lengths, seq_ids, keys: dict, rtols) -> pd.DataFrame:
    """Long rows (one per sequence, layer, metric) from states (L + 1, B, n, d)."""
    frames = []
    for b, (n, seq_id) in enumerate(zip(lengths, seq_ids, strict=True)):
        m = token_metrics(states[:, b, :n], rtols)  # each value: (L + 1,)
        values = torch.stack([v.to(torch.float64) for v in m.values()])  # (M, L+1)
        n_metrics, depth = values.shape
        frames.append(
            pd.DataFrame(
                {
                    **keys,
                    "seq_id": seq_id,
                    "n": n,
                    "layer": np.tile(np.arange(depth), n_metrics),
                    "metric": np.repeat(list(m), depth),
                    "value": values.reshape(-1).numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def spectrum_rows(states, lengths, seq_ids, keys: dict) -> list[dict]:
    """Normalised singular values of X and of the centred X at every depth."""
    rows = []
    for b, (n, seq_id) in enumerate(zip(lengths, seq_ids, strict=True)):
        s, sc = spectra(states[:, b, :n])
        for kind, spec in (("X", s), ("centred", sc)):
            for layer, values in enumerate(spec.tolist()):
                rows += [
                    {
                        **keys,
                        "seq_id": seq_id,
                        "layer": layer,
                        "kind": kind,
                        "index": i,
                        "value": v,
                    }
                    for i, v in enumerate(values)
                ]
    return rows


def summarise(depth: pd.DataFrame) -> pd.DataFrame:
    """Median and quartiles over sequences of every metric at every layer."""
    keys = ["model", "init", "variant", "layer", "metric"]
    g = depth.groupby(keys)["value"]
    out = g.median().rename("median").to_frame()
    out["q25"] = g.quantile(0.25)
    out["q75"] = g.quantile(0.75)
    out["n_sequences"] = g.size()
    return out.reset_index()


def last_layer(summary: pd.DataFrame, collapse_ratio: float) -> pd.DataFrame:
    """One row per model and variant at its deepest layer, with a collapse flag.

    A variant has collapsed when the median residual ratio is below
    ``collapse_ratio`` or the median affine rank is at most 1.
    """
    wide = summary.pivot_table(
        index=["model", "init", "variant", "layer"], columns="metric", values="median"
    ).reset_index()
    x0 = wide[wide.layer == 0].set_index(["model", "variant"])["affine_rank"]
    deepest = wide.loc[wide.groupby(["model", "variant"]).layer.idxmax()].copy()
    deepest["input_affine_rank_median"] = [
        x0[(m, v)] for m, v in zip(deepest.model, deepest.variant, strict=True)
    ]
    deepest = deepest.rename(
        columns={
            "res_ratio": "res_ratio_median",
            "res_ratio_fro": "res_ratio_fro_median",
            "affine_rank": "affine_rank_median",
            "rank": "rank_median",
            "effective_rank": "effective_rank_median",
        }
    )
    deepest["collapsed"] = (deepest.res_ratio_median < collapse_ratio) | (
        deepest.affine_rank_median <= 1
    )
    cols = [
        "model",
        "init",
        "variant",
        "layer",
        "res_ratio_median",
        "res_ratio_fro_median",
        "affine_rank_median",
        "input_affine_rank_median",
        "rank_median",
        "effective_rank_median",
        "collapsed",
    ]
    return deepest[cols].sort_values(["model", "variant"]).reset_index(drop=True)


def verdict_c2_depth(
    last: pd.DataFrame, full_check: pd.DataFrame, files: list[str]
) -> Verdict:
    """C2's depth evidence: residual variants without MLP keep rank in every model.

    ``confirmed``: no model's ``attn+res`` or ``attn+res+ln`` collapsed.
    ``qualified``: they collapsed in some models but not in others.
    ``not supported``: they collapsed in every model.
    The pure attention variants are reported alongside as the contrast.
    """
    residual = last[last.variant.isin(["attn+res", "attn+res+ln"])]
    pure = last[last.variant.isin(["attn", "attn+ln"])]
    if residual.empty:
        return Verdict("C2", "not run", "No residual variant was run.", files=files)

    per_model = residual.groupby("model").collapsed.any()
    held = sorted(per_model.index[~per_model])
    failed = sorted(per_model.index[per_model])
    evidence = {
        "residual_collapsed": {
            f"{r.model}/{r.variant}": bool(r.collapsed) for r in residual.itertuples()
        },
        "residual_ratio_last_layer": {
            f"{r.model}/{r.variant}": r.res_ratio_median for r in residual.itertuples()
        },
        "pure_attention_collapsed": {
            f"{r.model}/{r.variant}": bool(r.collapsed) for r in pure.itertuples()
        },
        "full_matches_library_max_abs": float(full_check["max_abs_diff"].max())
        if len(full_check)
        else None,
    }
    if not failed:
        outcome = "confirmed"
        summary = (
            f"With residual connections and no MLP, no model collapsed at "
            f"its deepest layer ({', '.join(held)})."
        )
    elif held:
        outcome = "qualified"
        summary = (
            f"Residual stacks without MLP kept their rank in "
            f"{', '.join(held)} but collapsed in {', '.join(failed)}."
        )
    else:
        outcome = "not supported"
        summary = (
            "Residual stacks without MLP collapsed in every model: "
            f"{', '.join(failed)}."
        )
    return Verdict(
        "C2", outcome, summary, evidence=evidence, files=files, experiments=["E1"]
    )
