# E7: width and entropy (claim C6). Rank collapse in width with each model's shapes
# (Nait Saada, Naderi & Tanner 2024); attention entropy of every model over the
# corpus, over PG-OP training (E6's log, when E6 is built) and in a small
# from-scratch run with and without sigma-reparametrisation (Zhai et al. 2023).


validate(config["e7"], str(REPO / "workflow/schemas/e7.schema.yaml"))

E7_ARMS = list(config["e7"]["training"]["arms"])
E7_CATEGORY = "E7 width and entropy"


rule width_sweep:
    input:
        f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        "results/e7/width/{model}.parquet",
    log:
        "logs/e7/width_sweep/{model}.log",
    threads: 1
    params:
        cfg=config["e7"]["width"],
        model_dir=lambda wc: model_dir(wc.model),
    script:
        "../scripts/e7_width.py"


rule width_figure:
    input:
        expand("results/e7/width/{model}.parquet", model=MODELS),
    output:
        png=report(
            "results/figures/e7_width.png",
            caption=caption("e7_width"),
            category=E7_CATEGORY,
        ),
        svg="results/figures/e7_width.svg",
        table=report(
            "results/tables/e7_width.csv",
            caption=caption("e7_width_table"),
            category=E7_CATEGORY,
        ),
    log:
        "logs/e7/width_figure.log",
    script:
        "../scripts/e7_width_figure.py"


rule attention_entropy:
    input:
        f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        "results/e7/entropy/{model}.parquet",
    log:
        "logs/e7/attention_entropy/{model}.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        corpus=config["corpus"],
        device=config["device"],
        model_dir=lambda wc: model_dir(wc.model),
    script:
        "../scripts/e7_entropy.py"


rule entropy_figure:
    input:
        expand("results/e7/entropy/{model}.parquet", model=MODELS),
    output:
        png=report(
            "results/figures/e7_entropy_models.png",
            caption=caption("e7_entropy_models"),
            category=E7_CATEGORY,
        ),
        svg="results/figures/e7_entropy_models.svg",
        table=report(
            "results/tables/e7_entropy.csv",
            caption=caption("e7_entropy_table"),
            category=E7_CATEGORY,
        ),
    log:
        "logs/e7/entropy_figure.log",
    script:
        "../scripts/e7_entropy_figure.py"


rule entropy_training:
    output:
        "results/e7/entropy_training/{arm}.parquet",
    log:
        "logs/e7/entropy_training/{arm}.log",
    wildcard_constraints:
        arm="|".join(E7_ARMS),
    threads: 1
    params:
        cfg=config["e7"]["training"],
        arm=lambda wc: config["e7"]["training"]["arms"][wc.arm],
    script:
        "../scripts/e7_entropy_training.py"


rule entropy_training_figure:
    input:
        expand("results/e7/entropy_training/{arm}.parquet", arm=E7_ARMS),
    output:
        png=report(
            "results/figures/e7_entropy_training.png",
            caption=caption("e7_entropy_training"),
            category=E7_CATEGORY,
        ),
        svg="results/figures/e7_entropy_training.svg",
        table=report(
            "results/tables/e7_entropy_training.csv",
            caption=caption("e7_entropy_training_table"),
            category=E7_CATEGORY,
        ),
    log:
        "logs/e7/entropy_training_figure.log",
    params:
        collapse_entropy=config["e7"]["training"]["collapse_entropy"],
    script:
        "../scripts/e7_entropy_training_figure.py"


TARGETS["e7"] = [
    "results/figures/e7_width.png",
    "results/tables/e7_width.csv",
    "results/figures/e7_entropy_models.png",
    "results/tables/e7_entropy.csv",
    "results/figures/e7_entropy_training.png",
    "results/tables/e7_entropy_training.csv",
]


# Entropy over PG-OP training: only when experiment E6 is part of this workflow.
if "e6" in TARGETS:

    rule pgop_entropy_figure:
        input:
            "results/e6/training_log.parquet",
        output:
            png=report(
                "results/figures/e7_entropy_pgop.png",
                caption=caption("e7_entropy_pgop"),
                category=E7_CATEGORY,
            ),
            svg="results/figures/e7_entropy_pgop.svg",
        log:
            "logs/e7/pgop_entropy_figure.log",
        script:
            "../scripts/e7_pgop_entropy_figure.py"

    TARGETS["e7"].append("results/figures/e7_entropy_pgop.png")
