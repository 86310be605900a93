# E2: genericity (claim C2). Attention + residual stacks, no MLP, with each analysed
# model's shapes: Gaussian weight draws per model and scale (one job each), the
# model's own weights over the corpus, and a weight set that collapses X exactly,
# perturbed by eps * G. The C2 verdict joins this with E1's table when E1 is built.


validate(config["e2"], str(REPO / "workflow/schemas/e2.schema.yaml"))

E2 = config["e2"]
E2_SCALES = [f"{s:g}" for s in E2["scales"]]
E2_TABLES = ["e2_trials", "e2_own", "e2_exceptional"]
E2_FIGURES = ["e2_trials", "e2_layers", "e2_exceptional"]

TARGETS["e2"] = (
    [f"results/tables/{t}.csv" for t in E2_TABLES]
    + [f"results/figures/{f}.{ext}" for f in E2_FIGURES for ext in ("png", "svg")]
    + ["results/verdicts/C2.json"]
)
# C2 is decided here from E2 and E1 together; this replaces E1's depth-only file.
VERDICT_FILES["C2"] = "results/verdicts/C2.json"


def e1_last_layer(wildcards):
    """E1's summary joins the C2 verdict only when this configuration builds E1."""
    return ["results/tables/e1_last_layer.csv"] if "e1" in TARGETS else []


rule e2_inputs:
    input:
        provenance=f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        "results/e2/inputs/{model}.pt",
    log:
        "logs/e2_inputs/{model}.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        model_dir=lambda wc: model_dir(wc.model),
        corpus=config["corpus"],
        n_tokens=E2["n_tokens"],
        sequences=E2["draws"],
        device=config["device"],
    script:
        "../scripts/e2_inputs.py"


rule e2_trials:
    input:
        inputs="results/e2/inputs/{model}.pt",
        provenance=f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        "results/e2/trials/{model}_x{scale}.parquet",
    log:
        "logs/e2_trials/{model}_x{scale}.log",
    benchmark:
        "logs/e2_trials/{model}_x{scale}.benchmark.tsv"
    wildcard_constraints:
        scale="|".join(map(re.escape, E2_SCALES)),
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        model_dir=lambda wc: model_dir(wc.model),
        e2=E2,
        rtols=config["tolerances"]["rtols"],
        device=config["device"],
    script:
        "../scripts/e2_trials.py"


rule e2_own_weights:
    input:
        provenance=f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        "results/e2/own/{model}.parquet",
    log:
        "logs/e2_own_weights/{model}.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        model_dir=lambda wc: model_dir(wc.model),
        corpus=config["corpus"],
        rtols=config["tolerances"]["rtols"],
        device=config["device"],
    script:
        "../scripts/e2_own_weights.py"


rule e2_exceptional:
    input:
        inputs="results/e2/inputs/{model}.pt",
        provenance=f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        "results/e2/exceptional/{model}.parquet",
    log:
        "logs/e2_exceptional/{model}.log",
    threads: 1
    params:
        model_dir=lambda wc: model_dir(wc.model),
        e2=E2,
        rtols=config["tolerances"]["rtols"],
    script:
        "../scripts/e2_exceptional.py"


rule e2_tables:
    input:
        trials=expand(
            "results/e2/trials/{model}_x{scale}.parquet", model=MODELS, scale=E2_SCALES
        ),
        benchmarks=expand(
            "logs/e2_trials/{model}_x{scale}.benchmark.tsv",
            model=MODELS,
            scale=E2_SCALES,
        ),
        own=expand("results/e2/own/{model}.parquet", model=MODELS),
        exceptional=expand("results/e2/exceptional/{model}.parquet", model=MODELS),
    output:
        trials=report(
            "results/tables/e2_trials.csv",
            caption=caption("e2_trials_table"),
            category="E2 genericity",
        ),
        own=report(
            "results/tables/e2_own.csv",
            caption=caption("e2_own_table"),
            category="E2 genericity",
        ),
        exceptional=report(
            "results/tables/e2_exceptional.csv",
            caption=caption("e2_exceptional_table"),
            category="E2 genericity",
        ),
        units="results/e2/units.parquet",
        layers="results/e2/layers.parquet",
    log:
        "logs/e2_tables.log",
    params:
        models=MODELS,
        scales=E2_SCALES,
        confidence=E2["confidence"],
        fit_exponents=E2["exceptional"]["fit_exponents"],
    script:
        "../scripts/e2_tables.py"


rule e2_figure_trials:
    input:
        units="results/e2/units.parquet",
        provenance=expand(f"{MODELS_DIR}/{{model}}/provenance.json", model=MODELS),
    output:
        png=report(
            "results/figures/e2_trials.png",
            caption=caption("e2_trials"),
            category="E2 genericity",
        ),
        svg="results/figures/e2_trials.svg",
    log:
        "logs/e2_figure_trials.log",
    params:
        model_dirs={m: model_dir(m) for m in MODELS},
        labels={m: model_label(m) for m in MODELS},
        n_tokens=E2["n_tokens"],
    script:
        "../scripts/e2_figure_trials.py"


rule e2_figure_layers:
    input:
        layers="results/e2/layers.parquet",
    output:
        png=report(
            "results/figures/e2_layers.png",
            caption=caption("e2_layers"),
            category="E2 genericity",
        ),
        svg="results/figures/e2_layers.svg",
    log:
        "logs/e2_figure_layers.log",
    params:
        labels={m: model_label(m) for m in MODELS},
    script:
        "../scripts/e2_figure_layers.py"


rule e2_figure_exceptional:
    input:
        long=expand("results/e2/exceptional/{model}.parquet", model=MODELS),
        table="results/tables/e2_exceptional.csv",
    output:
        png=report(
            "results/figures/e2_exceptional.png",
            caption=caption("e2_exceptional"),
            category="E2 genericity",
        ),
        svg="results/figures/e2_exceptional.svg",
    log:
        "logs/e2_figure_exceptional.log",
    params:
        labels={m: model_label(m) for m in MODELS},
        fit_exponents=E2["exceptional"]["fit_exponents"],
    script:
        "../scripts/e2_figure_exceptional.py"


rule c2_verdict:
    input:
        trials="results/tables/e2_trials.csv",
        own="results/tables/e2_own.csv",
        exceptional="results/tables/e2_exceptional.csv",
        e1=e1_last_layer,
    output:
        "results/verdicts/C2.json",
    log:
        "logs/c2_verdict.log",
    script:
        "../scripts/c2_verdict.py"
