# E1: rank collapse in depth (claim C2; replicates Dong et al. 2021). Each model's
# layers are rewired into variants and followed from the embedding output.


rule e1_depth:
    input:
        provenance=f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        depth="results/e1/{model}/depth.parquet",
        spectra="results/e1/{model}/spectra.parquet",
        checks="results/e1/{model}/checks.parquet",
    log:
        "logs/e1_depth/{model}.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        model=lambda wc: wc.model,
        e1=config["e1"],
        corpus=config["corpus"],
        rtols=config["tolerances"]["rtols"],
        device=config["device"],
    script:
        "../scripts/e1_depth.py"


rule e1_figures:
    input:
        depth=expand("results/e1/{model}/depth.parquet", model=MODELS),
        checks=expand("results/e1/{model}/checks.parquet", model=MODELS),
    output:
        summary="results/e1/summary.parquet",
        last=report(
            "results/tables/e1_last_layer.csv",
            caption=caption("e1_last_layer"),
            category="E1 rank collapse in depth",
        ),
        checks=report(
            "results/tables/e1_checks.csv",
            caption=caption("e1_checks"),
            category="E1 rank collapse in depth",
        ),
        residual=report(
            "results/figures/e1_residual_depth.png",
            caption=caption("e1_residual_depth"),
            category="E1 rank collapse in depth",
        ),
        rank=report(
            "results/figures/e1_affine_rank_depth.png",
            caption=caption("e1_affine_rank_depth"),
            category="E1 rank collapse in depth",
        ),
        loglog=report(
            "results/figures/e1_loglog_depth.png",
            caption=caption("e1_loglog_depth"),
            category="E1 rank collapse in depth",
        ),
        verdict="results/e1/verdict_c2_depth.json",
    log:
        "logs/e1_figures.log",
    params:
        labels={m: model_label(m) for m in MODELS},
        collapse_ratio=config["e1"]["collapse_ratio"],
    script:
        "../scripts/e1_figures.py"


TARGETS["e1"] = rules.e1_figures.output
VERDICT_FILES["C2"] = "results/e1/verdict_c2_depth.json"
