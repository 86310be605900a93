# E3: LayerNorm and affine rank (claim C1). Ranks of the input and output of every
# LayerNorm of every model, on the corpus and on long sequences; synthetic token
# sets (families F1-F7) at each d; tables, figures and the C1 verdict.


validate(config["e3"], str(REPO / "workflow/schemas/e3.schema.yaml"))

E3_DIMS = config["e3"]["dims"]

TARGETS["e3"] = [
    "results/tables/e3_real_counts.csv",
    "results/tables/e3_matrix_form.csv",
    "results/tables/e3_ln_params.csv",
    "results/tables/e3_synthetic.csv",
    "results/tables/e3_f5.csv",
    "results/tables/e3_f5_slopes.csv",
    "results/figures/e3_f5_delta.png",
    "results/figures/e3_f5_delta.svg",
    "results/figures/e3_synthetic_changes.png",
    "results/figures/e3_synthetic_changes.svg",
    "results/figures/e3_real_spectra.png",
    "results/figures/e3_real_spectra.svg",
    "results/verdicts/C1.json",
]

VERDICT_FILES["C1"] = "results/verdicts/C1.json"


rule e3_real_site_ranks:
    input:
        provenance=f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        ranks="results/e3/real_sites/{model}.parquet",
        spectra="results/e3/spectra/{model}.parquet",
        ln_params="results/e3/ln_params/{model}.parquet",
    log:
        "logs/e3/real_site_ranks/{model}.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        model_dir=lambda wc: model_dir(wc.model),
        corpus=config["corpus"],
        rtols=config["tolerances"]["rtols"],
        e3=config["e3"],
        device=config["device"],
    script:
        "../scripts/e3_real_site_ranks.py"


rule e3_synthetic_ranks:
    output:
        "results/e3/synthetic/d{d}.parquet",
    log:
        "logs/e3/synthetic_ranks/d{d}.log",
    wildcard_constraints:
        d=r"\d+",
    threads: 1
    params:
        rtols=config["tolerances"]["rtols"],
        e3=config["e3"],
    script:
        "../scripts/e3_synthetic_ranks.py"


rule e3_tables:
    input:
        ranks=expand("results/e3/real_sites/{model}.parquet", model=MODELS),
        ln_params=expand("results/e3/ln_params/{model}.parquet", model=MODELS),
        synthetic=expand("results/e3/synthetic/d{d}.parquet", d=E3_DIMS),
    output:
        counts=report(
            "results/tables/e3_real_counts.csv",
            caption=caption("e3_real_counts"),
            category="E3 LayerNorm",
        ),
        matrix_form=report(
            "results/tables/e3_matrix_form.csv",
            caption=caption("e3_matrix_form"),
            category="E3 LayerNorm",
        ),
        ln_params=report(
            "results/tables/e3_ln_params.csv",
            caption=caption("e3_ln_params"),
            category="E3 LayerNorm",
        ),
        synthetic=report(
            "results/tables/e3_synthetic.csv",
            caption=caption("e3_synthetic"),
            category="E3 LayerNorm",
        ),
        f5=report(
            "results/tables/e3_f5.csv",
            caption=caption("e3_f5"),
            category="E3 LayerNorm",
        ),
        slopes=report(
            "results/tables/e3_f5_slopes.csv",
            caption=caption("e3_f5_slopes"),
            category="E3 LayerNorm",
        ),
    log:
        "logs/e3/tables.log",
    params:
        slope_floor=config["e3"]["slope_floor"],
    script:
        "../scripts/e3_tables.py"


rule e3_f5_figure:
    input:
        f5="results/tables/e3_f5.csv",
        slopes="results/tables/e3_f5_slopes.csv",
    output:
        png=report(
            "results/figures/e3_f5_delta.png",
            caption=caption("e3_f5_delta"),
            category="E3 LayerNorm",
        ),
        svg="results/figures/e3_f5_delta.svg",
    log:
        "logs/e3/f5_figure.log",
    script:
        "../scripts/e3_f5_figure.py"


rule e3_synthetic_figure:
    input:
        "results/tables/e3_synthetic.csv",
    output:
        png=report(
            "results/figures/e3_synthetic_changes.png",
            caption=caption("e3_synthetic_changes"),
            category="E3 LayerNorm",
        ),
        svg="results/figures/e3_synthetic_changes.svg",
    log:
        "logs/e3/synthetic_figure.log",
    params:
        tolerance=config["e3"]["synthetic_tolerance"],
    script:
        "../scripts/e3_synthetic_figure.py"


rule e3_spectra_figure:
    input:
        expand("results/e3/spectra/{model}.parquet", model=MODELS),
    output:
        png=report(
            "results/figures/e3_real_spectra.png",
            caption=caption("e3_real_spectra"),
            category="E3 LayerNorm",
        ),
        svg="results/figures/e3_real_spectra.svg",
    log:
        "logs/e3/spectra_figure.log",
    params:
        ln=config["e3"]["figure_ln"],
    script:
        "../scripts/e3_spectra_figure.py"


rule e3_verdict:
    input:
        counts="results/tables/e3_real_counts.csv",
        synthetic="results/tables/e3_synthetic.csv",
    output:
        "results/verdicts/C1.json",
    log:
        "logs/e3/verdict.log",
    params:
        e3=config["e3"],
    script:
        "../scripts/e3_verdict.py"
