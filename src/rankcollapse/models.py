"""Fetch, load and take apart the BERT-family encoders the experiments run on.

A model comes from one of three sources: the Hugging Face hub at a pinned
revision, a Python package that ships the weights, or a random initialisation of
a named configuration with a seed. Every source ends as a local folder that
``load_model`` reads with the hub offline.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PROVENANCE = "provenance.json"


class ModelSourceError(ValueError):
    """A model entry of the config that cannot be fetched; the message names it."""


# ----------------------------------------------------------------------------
# Fetching: three sources, one folder layout.


def fetch_model(name: str, spec: dict, out_dir: str | Path, models_dir=None) -> Path:
    """Materialise model ``name`` described by config entry ``spec`` in ``out_dir``.

    The folder is written under a temporary name and renamed when complete, so a
    failed fetch leaves nothing behind.
    """
    out_dir = Path(out_dir)
    source = spec.get("source")
    fetchers = {"hub": _fetch_hub, "package": _fetch_package, "random": _fetch_random}
    if source not in fetchers:
        raise ModelSourceError(
            f"models.{name}.source is {source!r}; expected one of {sorted(fetchers)}"
        )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        provenance = fetchers[source](
            name, spec, tmp, Path(models_dir or out_dir.parent)
        )
        provenance = {"name": name, "source": source, **provenance}
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _fetch_hub(name, spec, tmp: Path, models_dir: Path) -> dict:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, revision = spec.get("repo_id"), spec.get("revision")
    if not repo_id or not revision:
        raise ModelSourceError(f"models.{name} (hub) needs repo_id and revision")
    try:
        path = snapshot_download(
            repo_id=repo_id,
            revision=revision,
            allow_patterns=spec.get(
                "allow_patterns",
                [
                    "config.json",
                    "*.safetensors",
                    "tokenizer*",
                    "vocab.txt",
                    "special_tokens_map.json",
                ],
            ),
        )
    except LocalEntryNotFoundError as err:
        raise ModelSourceError(
            f"models.{name}: {repo_id}@{revision} is not in the local hub cache "
            "and the hub cannot be reached (HF_HUB_OFFLINE is set or no network)"
        ) from err
    _copy_tree(Path(path), tmp)
    return {"repo_id": repo_id, "revision": revision, "init": "pretrained"}


def _fetch_package(name, spec, tmp: Path, models_dir: Path) -> dict:
    package = spec.get("package")
    try:
        module = importlib.import_module(package)
    except (ImportError, TypeError) as err:
        raise ModelSourceError(
            f"models.{name}.package {package!r} cannot be imported; install it "
            "(see README) or fix the name"
        ) from err
    root = Path(module.__file__).parent / spec.get("subdir", "")
    if not (root / "config.json").is_file():
        raise ModelSourceError(f"models.{name}: no config.json under {root}")
    _copy_tree(root, tmp)
    version = getattr(module, "__version__", "unknown")
    return {"package": package, "package_version": version, "init": "pretrained"}


def _fetch_random(name, spec, tmp: Path, models_dir: Path) -> dict:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    arch = dict(spec.get("architecture") or {})
    if "model_type" not in arch:
        raise ModelSourceError(f"models.{name}.architecture needs a model_type")
    config = AutoConfig.for_model(**arch)
    seed = int(spec.get("seed", 0))
    torch.manual_seed(seed)
    model = AutoModel.from_config(config, attn_implementation="eager")
    model.save_pretrained(tmp)

    tok_from = spec.get("tokenizer_from")
    if tok_from:
        src = models_dir / tok_from
        if not (src / "config.json").is_file():
            raise ModelSourceError(
                f"models.{name}.tokenizer_from names {tok_from!r}, not fetched at {src}"
            )
        AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
    return {
        "architecture": arch,
        "seed": seed,
        "init": "random",
        "tokenizer_from": tok_from,
    }


def _copy_tree(src: Path, dst: Path) -> None:
    for item in src.rglob("*"):
        if item.is_file() and not item.name.startswith("."):
            target = dst / item.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.resolve(), target)


# ----------------------------------------------------------------------------
# Loading.


def set_determinism(threads: int | None = None) -> None:
    """float32 matmuls without TF32, deterministic kernels where available."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if threads:
        torch.set_num_threads(threads)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def describe_device(device: str = "auto") -> dict:
    """Where ``device`` runs a model on this machine: for the run record.

    The resolved device with its index (``cuda:0``, ``cpu``), its name (the GPU
    model, or the CPU's) and the float32 matmul settings ``set_determinism``
    leaves in force.
    """
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        index = resolved.index
        if index is None:
            index = torch.cuda.current_device()
        resolved = torch.device("cuda", index)
        name = torch.cuda.get_device_name(resolved)
    else:
        name = _cpu_name()
    return {
        "requested": device,
        "resolved": str(resolved),
        "name": name,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_model(path: str | Path, device: str = "auto"):
    """Load a fetched model folder offline: float32, eager attention, eval mode."""
    from transformers import AutoModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no fetched model at {path}: run `snakemake {path}` or check the "
            "models section of the config"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    set_determinism()
    model = AutoModel.from_pretrained(
        path, attn_implementation="eager", dtype=torch.float32
    )
    return model.to(resolve_device(device)).eval()


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(path))


def provenance(path: str | Path) -> dict:
    p = Path(path) / PROVENANCE
    return json.loads(p.read_text()) if p.is_file() else {}


# ----------------------------------------------------------------------------
# One layer in the paper's symbols (row-vector convention: y = x W + b).


@dataclass
class LayerWeights:
    """Weights of one post-LN BERT layer, float64, split per head.

    Shapes: ``W_Q, W_K, W_V`` (H, d, d_k); ``b_Q, b_K, b_V`` (H, d_k);
    ``W_O`` (H, d_k, d); ``b_O`` (d,); LayerNorms ``gamma1, beta1, gamma2, beta2``.
    """

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    b_Q: torch.Tensor
    b_K: torch.Tensor
    b_V: torch.Tensor
    W_O: torch.Tensor
    b_O: torch.Tensor
    gamma1: torch.Tensor
    beta1: torch.Tensor
    eps1: float
    gamma2: torch.Tensor
    beta2: torch.Tensor
    eps2: float

    @property
    def n_heads(self) -> int:
        return self.W_Q.shape[0]

    @property
    def d_k(self) -> int:
        return self.W_Q.shape[2]


def layer_weights(layer, dtype=torch.float64) -> LayerWeights:
    """Split a transformers ``BertLayer`` into per-head matrices."""
    att = layer.attention.self
    H, dk = att.num_attention_heads, att.attention_head_size

    def per_head_in(linear):  # (H d_k, d) -> (H, d, d_k)
        w = linear.weight.detach().to(dtype)
        return w.view(H, dk, -1).transpose(1, 2).contiguous()

    def per_head_bias(linear):
        return linear.bias.detach().to(dtype).view(H, dk)

    dense = layer.attention.output.dense
    ln1, ln2 = layer.attention.output.LayerNorm, layer.output.LayerNorm
    return LayerWeights(
        W_Q=per_head_in(att.query),
        W_K=per_head_in(att.key),
        W_V=per_head_in(att.value),
        b_Q=per_head_bias(att.query),
        b_K=per_head_bias(att.key),
        b_V=per_head_bias(att.value),
        W_O=dense.weight.detach().to(dtype).T.reshape(H, dk, -1).contiguous(),
        b_O=dense.bias.detach().to(dtype),
        gamma1=ln1.weight.detach().to(dtype),
        beta1=ln1.bias.detach().to(dtype),
        eps1=ln1.eps,
        gamma2=ln2.weight.detach().to(dtype),
        beta2=ln2.bias.detach().to(dtype),
        eps2=ln2.eps,
    )


def deeper_random(path: str | Path, n_layers: int, device: str = "auto"):
    """A random-init model like the one at ``path`` but ``n_layers`` deep.

    Drawn afresh from the configuration and seed recorded in its provenance, so
    the stack can be followed past the model's own depth.
    """
    from transformers import AutoConfig, AutoModel

    prov = provenance(path)
    if prov.get("init") != "random":
        raise ValueError(f"{path} is not a random-init model; cannot draw it deeper")
    config = AutoConfig.from_pretrained(path)
    config.num_hidden_layers = n_layers
    set_determinism()
    torch.manual_seed(int(prov["seed"]))
    model = AutoModel.from_config(config, attn_implementation="eager")
    return model.to(resolve_device(device)).eval()
