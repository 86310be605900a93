"""Read named sites of a BERT-family forward pass with hooks, in one pass.

A *site* is a named place in the forward pass where a token matrix is read. The
names below are the one vocabulary that every experiment, table and figure uses::

    embed.ln.in          input of the embedding LayerNorm          (n, d)
    embed.out            X0, the embedding output                  (n, d)
    blocks.{l}.in        input of layer l                          (n, d)
    blocks.{l}.attn.probs  attention probabilities                 (H, n, n)
    blocks.{l}.attn.z    head outputs, before W_O                  (n, H, d_k)
    blocks.{l}.attn.out  mixed output, after W_O (b_O included)    (n, d)
    blocks.{l}.ln1.in    X + mixed output                          (n, d)
    blocks.{l}.ln1.out   output of the first LayerNorm             (n, d)
    blocks.{l}.mlp.out   MLP output, before its residual           (n, d)
    blocks.{l}.ln2.in    ln1.out + mlp.out                         (n, d)
    blocks.{l}.out       output of layer l (= ln2.out)             (n, d)
"""

from __future__ import annotations

import fnmatch

import torch

LAYER_SITES = (
    "in",
    "attn.probs",
    "attn.z",
    "attn.out",
    "ln1.in",
    "ln1.out",
    "mlp.out",
    "ln2.in",
    "out",
)
EMBED_SITES = ("embed.ln.in", "embed.out")


def all_sites(n_layers: int) -> list[str]:
    return list(EMBED_SITES) + [
        f"blocks.{l}.{s}" for l in range(n_layers) for s in LAYER_SITES
    ]


def _hook_table(model):
    """(site, module, kind, pick) for every site; kind is 'pre' or 'post'."""
    emb = model.embeddings
    rows = [("embed.ln.in", emb.LayerNorm, "pre", 0), ("embed.out", emb, "post", None)]
    for l, layer in enumerate(model.encoder.layer):
        attn = layer.attention
        p = f"blocks.{l}."
        rows += [
            (p + "in", layer, "pre", 0),
            (p + "attn.probs", attn.self, "post", 1),
            (p + "attn.z", attn.output.dense, "pre", 0),
            (p + "attn.out", attn.output.dense, "post", None),
            (p + "ln1.in", attn.output.LayerNorm, "pre", 0),
            (p + "ln1.out", attn.output.LayerNorm, "post", None),
            (p + "mlp.out", layer.output.dense, "post", None),
            (p + "ln2.in", layer.output.LayerNorm, "pre", 0),
            (p + "out", layer, "post", None),
        ]
    return rows


class Capture:
    """Context manager that records the requested sites during one forward pass.

    ``sites`` holds names or glob patterns (``blocks.*.attn.z``). After the pass,
    ``per_sequence(mask)`` returns one dict per sequence with padding removed.
    """

    def __init__(self, model, sites: list[str] | str = "*"):
        patterns = [sites] if isinstance(sites, str) else list(sites)
        self.table = [
            row
            for row in _hook_table(model)
            if any(fnmatch.fnmatchcase(row[0], p) for p in patterns)
        ]
        if not self.table:
            raise ValueError(f"no site matches {patterns}; see rankcollapse.capture")
        self.n_heads = model.config.num_attention_heads
        self.store: dict[str, torch.Tensor] = {}
        self._handles = []

    def __enter__(self):
        for site, module, kind, pick in self.table:
            if kind == "pre":

                def hook(mod, args, site=site, pick=pick):
                    self.store[site] = args[pick].detach()

                self._handles.append(module.register_forward_pre_hook(hook))
            else:

                def hook(mod, args, output, site=site, pick=pick):
                    out = output if pick is None else output[pick]
                    if isinstance(out, tuple):
                        out = out[0]
                    self.store[site] = out.detach()

                self._handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def per_sequence(self, attention_mask: torch.Tensor) -> list[dict]:
        """Split the batch into sequences, dropping padding rows (and keys)."""
        lengths = attention_mask.sum(dim=1).tolist()
        out = [dict() for _ in lengths]
        for site, t in self.store.items():
            if site.endswith("attn.z"):  # (B, n, H d_k) -> (B, n, H, d_k)
                t = t.view(*t.shape[:2], self.n_heads, -1)
            for b, n in enumerate(lengths):
                if site.endswith("attn.probs"):
                    out[b][site] = t[b, :, :n, :n]
                else:
                    out[b][site] = t[b, :n]
        return out


@torch.no_grad()
def run_and_capture(model, input_ids, attention_mask, sites="*") -> list[dict]:
    """One forward pass of ``model`` recording ``sites``; one dict per sequence."""
    device = next(model.parameters()).device
    with Capture(model, sites) as cap:
        model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
    return cap.per_sequence(attention_mask)
