# E9: feed-forward width (claim C7). Small encoders trained from scratch with
# d_ff = m d: task score, E4's energy outside T(X) and the layers' ranks, at
# initialisation and after training, per width and seed.


validate(config["e9"], str(REPO / "workflow/schemas/e9.schema.yaml"))

E9 = config["e9"]
if E9["verdict"]["reference_multiple"] not in E9["multiples"]:
    raise WorkflowError(
        f"e9.verdict.reference_multiple {E9['verdict']['reference_multiple']} is not "
        f"among e9.multiples {E9['multiples']}"
    )
E9_RUNS = expand(
    "results/e9/runs/ffn{multiple}x_seed{seed}.parquet",
    multiple=E9["multiples"],
    seed=E9["seeds"],
)
E9_HISTORIES = [f.replace(".parquet", "_history.parquet") for f in E9_RUNS]

TARGETS["e9"] = [
    "results/tables/e9_widths.csv",
    "results/tables/e9_runs.csv",
    "results/figures/e9_ffn_width.png",
    "results/figures/e9_training.png",
    "results/verdicts/C7.json",
]
VERDICT_FILES["C7"] = "results/verdicts/C7.json"


def e9_task_inputs(wildcards):
    """The corpus task cuts the stream with a fetched model's tokenizer."""
    if E9["task"]["source"] != "corpus":
        return []
    return [f"{model_dir(E9['task']['tokenizer_from'])}/provenance.json"]


rule e9_train:
    input:
        e9_task_inputs,
    output:
        metrics="results/e9/runs/ffn{multiple}x_seed{seed}.parquet",
        history="results/e9/runs/ffn{multiple}x_seed{seed}_history.parquet",
    log:
        "logs/e9/train/ffn{multiple}x_seed{seed}.log",
    wildcard_constraints:
        multiple=r"\d+",
        seed=r"\d+",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        model=E9["model"],
        task=E9["task"],
        train=E9["train"],
        measure_sequences=E9["measure_sequences"],
        tokenizer_dir=model_dir(E9["task"].get("tokenizer_from", "")),
        basis_rtol=config["e4"]["basis_rtol"],
        device=config["device"],
    script:
        "../scripts/e9_train.py"


rule e9_tables:
    input:
        runs=E9_RUNS,
    output:
        summary="results/e9/summary.parquet",
        runs=report(
            "results/tables/e9_runs.csv",
            caption=caption("e9_runs"),
            category="E9 feed-forward width",
        ),
        widths=report(
            "results/tables/e9_widths.csv",
            caption=caption("e9_widths"),
            category="E9 feed-forward width",
        ),
    log:
        "logs/e9/tables.log",
    params:
        containment_subspace=config["e4"]["verdict"]["containment_subspace"],
        generation_subspace=config["e4"]["verdict"]["generation_subspace"],
    script:
        "../scripts/e9_tables.py"


rule e9_width_figure:
    input:
        summary="results/e9/summary.parquet",
    output:
        png=report(
            "results/figures/e9_ffn_width.png",
            caption=caption("e9_ffn_width"),
            category="E9 feed-forward width",
        ),
        svg="results/figures/e9_ffn_width.svg",
    log:
        "logs/e9/width_figure.log",
    params:
        d=E9["model"]["d"],
        reference=E9["verdict"]["reference_multiple"],
    script:
        "../scripts/e9_width_figure.py"


rule e9_training_figure:
    input:
        histories=E9_HISTORIES,
    output:
        png=report(
            "results/figures/e9_training.png",
            caption=caption("e9_training"),
            category="E9 feed-forward width",
        ),
        svg="results/figures/e9_training.svg",
    log:
        "logs/e9/training_figure.log",
    script:
        "../scripts/e9_training_figure.py"


rule e9_verdict:
    input:
        summary="results/e9/summary.parquet",
    output:
        "results/verdicts/C7.json",
    log:
        "logs/e9/verdict.log",
    params:
        verdict=E9["verdict"],
    script:
        "../scripts/e9_verdict.py"
