# E4: where the MLP is needed (claim C3). The attention-reachable subspace T(X)
# of every layer, the energy of the attention sub-block, MLP and layer outputs
# outside it, and T propagated from X0 through an attention-only stack.


validate(config["e4"], str(REPO / "workflow/schemas/e4.schema.yaml"))

E4_DEEP = config["e4"]["deep_random"]

TARGETS["e4"] = [
    "results/tables/e4_summary.csv",
    "results/tables/e4_energy.csv",
    "results/tables/e4_propagation.csv",
    "results/tables/e4_regime.csv",
    "results/figures/e4_energy.png",
    "results/figures/e4_dimension.png",
    "results/figures/e4_propagation.png",
    "results/verdicts/C3.json",
]
VERDICT_FILES["C3"] = "results/verdicts/C3.json"


rule e4_layer_energy:
    input:
        provenance=f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        energy="results/e4/energy/{model}.parquet",
        regime="results/e4/regime/{model}.parquet",
    log:
        "logs/e4/layer_energy/{model}.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        model_dir=lambda wc: model_dir(wc.model),
        corpus=config["corpus"],
        max_sequences=config["e4"]["max_sequences"],
        basis_rtol=config["e4"]["basis_rtol"],
        device=config["device"],
    script:
        "../scripts/e4_layer_energy.py"


rule e4_propagation:
    input:
        provenance=f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        "results/e4/propagation/{model}.parquet",
    log:
        "logs/e4/propagation/{model}.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        model_dir=lambda wc: model_dir(wc.model),
        tokenizer_dir=lambda wc: model_dir(wc.model),
        random=None,
        corpus=config["corpus"],
        propagation=config["e4"]["propagation"],
        basis_rtol=config["e4"]["basis_rtol"],
        device=config["device"],
    script:
        "../scripts/e4_propagation.py"


rule e4_propagation_deep_random:
    input:
        provenance=f"{MODELS_DIR}/{E4_DEEP['tokenizer_from']}/provenance.json",
    output:
        "results/e4/propagation_deep_random.parquet",
    log:
        "logs/e4/propagation_deep_random.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        model_dir=None,
        tokenizer_dir=model_dir(E4_DEEP["tokenizer_from"]),
        random=E4_DEEP,
        corpus=config["corpus"],
        propagation=config["e4"]["propagation"],
        basis_rtol=config["e4"]["basis_rtol"],
        device=config["device"],
    script:
        "../scripts/e4_propagation.py"


rule e4_tables:
    input:
        energy=expand("results/e4/energy/{model}.parquet", model=MODELS),
        regime=expand("results/e4/regime/{model}.parquet", model=MODELS),
        propagation=expand("results/e4/propagation/{model}.parquet", model=MODELS),
        deep="results/e4/propagation_deep_random.parquet",
    output:
        summary=report(
            "results/tables/e4_summary.csv",
            caption=caption("e4_summary"),
            category="E4 reachable subspace",
        ),
        energy=report(
            "results/tables/e4_energy.csv",
            caption=caption("e4_energy_table"),
            category="E4 reachable subspace",
        ),
        propagation=report(
            "results/tables/e4_propagation.csv",
            caption=caption("e4_propagation_table"),
            category="E4 reachable subspace",
        ),
        regime=report(
            "results/tables/e4_regime.csv",
            caption=caption("e4_regime"),
            category="E4 reachable subspace",
        ),
    log:
        "logs/e4/tables.log",
    params:
        labels={**{m: model_label(m) for m in MODELS}, "deep-random": E4_DEEP["label"]},
        verdict=config["e4"]["verdict"],
    script:
        "../scripts/e4_tables.py"


rule e4_energy_figure:
    input:
        energy=expand("results/e4/energy/{model}.parquet", model=MODELS),
    output:
        png=report(
            "results/figures/e4_energy.png",
            caption=caption("e4_energy"),
            category="E4 reachable subspace",
        ),
        svg="results/figures/e4_energy.svg",
    log:
        "logs/e4/energy_figure.log",
    params:
        labels={m: model_label(m) for m in MODELS},
        verdict=config["e4"]["verdict"],
    script:
        "../scripts/e4_energy_figure.py"


rule e4_dimension_figure:
    input:
        energy=expand("results/e4/energy/{model}.parquet", model=MODELS),
    output:
        png=report(
            "results/figures/e4_dimension.png",
            caption=caption("e4_dimension"),
            category="E4 reachable subspace",
        ),
        svg="results/figures/e4_dimension.svg",
    log:
        "logs/e4/dimension_figure.log",
    params:
        labels={m: model_label(m) for m in MODELS},
    script:
        "../scripts/e4_dimension_figure.py"


rule e4_propagation_figure:
    input:
        propagation=expand("results/e4/propagation/{model}.parquet", model=MODELS),
        deep="results/e4/propagation_deep_random.parquet",
    output:
        png=report(
            "results/figures/e4_propagation.png",
            caption=caption("e4_propagation"),
            category="E4 reachable subspace",
        ),
        svg="results/figures/e4_propagation.svg",
    log:
        "logs/e4/propagation_figure.log",
    params:
        labels={**{m: model_label(m) for m in MODELS}, "deep-random": E4_DEEP["label"]},
        verdict=config["e4"]["verdict"],
    script:
        "../scripts/e4_propagation_figure.py"


rule e4_verdict:
    input:
        energy=expand("results/e4/energy/{model}.parquet", model=MODELS),
        regime=expand("results/e4/regime/{model}.parquet", model=MODELS),
        propagation=expand("results/e4/propagation/{model}.parquet", model=MODELS),
        deep="results/e4/propagation_deep_random.parquet",
    output:
        "results/verdicts/C3.json",
    log:
        "logs/e4/verdict.log",
    params:
        verdict=config["e4"]["verdict"],
    script:
        "../scripts/e4_verdict.py"
