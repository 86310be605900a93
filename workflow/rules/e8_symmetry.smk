# E8: the symmetry table (claim C6). Each collapse phenomenon is paired with a group
# acting on one real layer; every layer of every model is checked for the vanilla
# forward pass and under each symmetry-breaking mechanism. The verdict for C6 also
# reads E7's width and entropy summaries.


validate(config["e8"], str(REPO / "workflow/schemas/e8.schema.yaml"))

E8_CATEGORY = "E8 symmetry table"


rule symmetry_checks:
    input:
        f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        "results/e8/checks/{model}.parquet",
    log:
        "logs/e8/symmetry_checks/{model}.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        cfg=config["e8"],
        corpus=config["corpus"],
        device=config["device"],
        model_dir=lambda wc: model_dir(wc.model),
    script:
        "../scripts/e8_checks.py"


rule symmetry_table:
    input:
        expand("results/e8/checks/{model}.parquet", model=MODELS),
    output:
        table=report(
            "results/tables/e8_symmetry_table.csv",
            caption=caption("e8_symmetry_table"),
            category=E8_CATEGORY,
        ),
        definitions=report(
            "results/tables/e8_symmetry_definitions.csv",
            caption=caption("e8_symmetry_definitions"),
            category=E8_CATEGORY,
        ),
        cross=report(
            "results/tables/e8_cross.csv",
            caption=caption("e8_cross_table"),
            category=E8_CATEGORY,
        ),
        png=report(
            "results/figures/e8_cross.png",
            caption=caption("e8_cross"),
            category=E8_CATEGORY,
        ),
        svg="results/figures/e8_cross.svg",
    log:
        "logs/e8/symmetry_table.log",
    params:
        symmetry_tol=config["e8"]["symmetry_tol"],
        break_tol=config["e8"]["break_tol"],
    script:
        "../scripts/e8_table.py"


rule verdict_c6:
    input:
        table="results/tables/e8_symmetry_table.csv",
        cross="results/tables/e8_cross.csv",
        width="results/tables/e7_width.csv",
        training="results/tables/e7_entropy_training.csv",
    output:
        "results/verdicts/C6.json",
    log:
        "logs/e8/verdict_c6.log",
    params:
        cfg={
            "width_gap_ratio": config["e7"]["width"]["gap_ratio"],
            "vanilla_arm": config["e7"]["training"]["collapse_arm"],
            "remedy_arm": config["e7"]["training"]["remedy_arm"],
        },
    script:
        "../scripts/e8_verdict.py"


TARGETS["e8"] = [
    "results/tables/e8_symmetry_table.csv",
    "results/tables/e8_symmetry_definitions.csv",
    "results/tables/e8_cross.csv",
    "results/figures/e8_cross.png",
]
VERDICT_FILES["C6"] = "results/verdicts/C6.json"
