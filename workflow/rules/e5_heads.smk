# E5 head-channel non-identifiability (claim C4). Per model: reading A (the kernel
# of what a d_k-dimensional reader sees of the head outputs), reading B (W_O and
# the residual sum), and the head symmetries with the MLP on real weights. Then
# tables over all models, one rule per figure, and the C4 verdict.


validate(config["e5"], str(REPO / "workflow/schemas/e5.schema.yaml"))

E5_RTOLS = config["tolerances"].get("rtols", [])

TARGETS["e5"] = [
    "results/tables/e5_kernel.csv",
    "results/tables/e5_reading_b.csv",
    "results/tables/e5_symmetry.csv",
    "results/tables/e5_mlp.csv",
    "results/figures/e5_kernel.png",
    "results/figures/e5_readout.png",
    "results/figures/e5_symmetry.png",
    "results/verdicts/C4.json",
]
VERDICT_FILES["C4"] = "results/verdicts/C4.json"


rule e5_head_channels:
    input:
        f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        kernel="results/e5/{model}/kernel.parquet",
        reader_spectra="results/e5/{model}/reader_spectra.parquet",
        w_o="results/e5/{model}/w_o.parquet",
        w_o_spectra="results/e5/{model}/w_o_spectra.parquet",
        recovery="results/e5/{model}/recovery.parquet",
        symmetry="results/e5/{model}/symmetry.parquet",
        mlp="results/e5/{model}/mlp.parquet",
    log:
        "logs/e5_head_channels/{model}.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        path=lambda wc: model_dir(wc.model),
        cfg=config["e5"],
        rtols=E5_RTOLS,
        corpus=config["corpus"],
        device=config["device"],
    script:
        "../scripts/e5_head_channels.py"


rule e5_tables:
    input:
        kernel=expand("results/e5/{model}/kernel.parquet", model=MODELS),
        w_o=expand("results/e5/{model}/w_o.parquet", model=MODELS),
        recovery=expand("results/e5/{model}/recovery.parquet", model=MODELS),
        symmetry=expand("results/e5/{model}/symmetry.parquet", model=MODELS),
        mlp=expand("results/e5/{model}/mlp.parquet", model=MODELS),
    output:
        kernel=report(
            "results/tables/e5_kernel.csv",
            caption=caption("e5_kernel_table"),
            category="E5 head channels",
        ),
        reading_b=report(
            "results/tables/e5_reading_b.csv",
            caption=caption("e5_reading_b_table"),
            category="E5 head channels",
        ),
        symmetry=report(
            "results/tables/e5_symmetry.csv",
            caption=caption("e5_symmetry_table"),
            category="E5 head channels",
        ),
        mlp=report(
            "results/tables/e5_mlp.csv",
            caption=caption("e5_mlp_table"),
            category="E5 head channels",
        ),
    log:
        "logs/e5_tables.log",
    script:
        "../scripts/e5_tables.py"


rule e5_kernel_figure:
    input:
        table="results/tables/e5_kernel.csv",
        spectra=expand("results/e5/{model}/reader_spectra.parquet", model=MODELS),
    output:
        png=report(
            "results/figures/e5_kernel.png",
            caption=caption("e5_kernel"),
            category="E5 head channels",
        ),
        svg="results/figures/e5_kernel.svg",
    log:
        "logs/e5_kernel_figure.log",
    script:
        "../scripts/e5_kernel_figure.py"


rule e5_readout_figure:
    input:
        table="results/tables/e5_reading_b.csv",
        spectra=expand("results/e5/{model}/w_o_spectra.parquet", model=MODELS),
    output:
        png=report(
            "results/figures/e5_readout.png",
            caption=caption("e5_readout"),
            category="E5 head channels",
        ),
        svg="results/figures/e5_readout.svg",
    log:
        "logs/e5_readout_figure.log",
    script:
        "../scripts/e5_readout_figure.py"


rule e5_symmetry_figure:
    input:
        symmetry=expand("results/e5/{model}/symmetry.parquet", model=MODELS),
        mlp=expand("results/e5/{model}/mlp.parquet", model=MODELS),
    output:
        png=report(
            "results/figures/e5_symmetry.png",
            caption=caption("e5_symmetry"),
            category="E5 head channels",
        ),
        svg="results/figures/e5_symmetry.svg",
    log:
        "logs/e5_symmetry_figure.log",
    script:
        "../scripts/e5_symmetry_figure.py"


rule e5_verdict:
    input:
        kernel="results/tables/e5_kernel.csv",
        reading_b="results/tables/e5_reading_b.csv",
        symmetry="results/tables/e5_symmetry.csv",
        mlp="results/tables/e5_mlp.csv",
    output:
        "results/verdicts/C4.json",
    log:
        "logs/e5_verdict.log",
    params:
        cfg=config["e5"],
    script:
        "../scripts/e5_verdict.py"
