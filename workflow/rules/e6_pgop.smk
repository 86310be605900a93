# E6: PG-OP, the position-gated output projection (claim C5). Its overhead from
# instantiated modules; per analysed model, equality at initialisation, save and
# reload, and the symmetries of C4 with gates that differ; training vanilla against
# PG-OP, one job per (task, arm, seed); tables, figures and the C5 verdict.


validate(config["e6"], str(REPO / "workflow/schemas/e6.schema.yaml"))

E6 = config["e6"]
E6_TASKS = [t for t, spec in E6["training"]["tasks"].items() if spec["enabled"]]
E6_ARMS = ["vanilla", "pgop"]
E6_RUN = "results/e6/runs/{task}/{arm}/seed{seed}"
E6_RUNS = expand(E6_RUN, task=E6_TASKS, arm=E6_ARMS, seed=E6["training"]["seeds"])

for _task in E6_TASKS:
    _model = E6["training"]["tasks"][_task].get("model")
    if _model is not None and _model not in config["models"]:
        raise WorkflowError(
            f"config key e6.training.tasks.{_task}.model names {_model!r}, which "
            f"is not in config key models (known: {sorted(config['models'])})"
        )

TARGETS["e6"] = [
    "results/tables/e6_overhead.csv",
    "results/tables/e6_checks.csv",
    "results/e6/training_log.parquet",
    "results/tables/e6_score_summary.csv",
    "results/tables/e6_identifiability.csv",
    "results/tables/e6_run_times.csv",
    "results/figures/e6_training_curves.png",
    "results/figures/e6_training_curves.svg",
    "results/figures/e6_gate_profiles.png",
    "results/figures/e6_gate_profiles.svg",
    "results/verdicts/C5.json",
]

VERDICT_FILES["C5"] = "results/verdicts/C5.json"


wildcard_constraints:
    task="|".join(E6["training"]["tasks"]),
    arm="|".join(E6_ARMS),
    seed=r"\d+",


def e6_task_inputs(wildcards):
    """A fine-tuning task needs its pretrained model fetched."""
    name = E6["training"]["tasks"][wildcards.task].get("model")
    return [f"{model_dir(name)}/provenance.json"] if name else []


def e6_task_model_dir(wildcards):
    name = E6["training"]["tasks"][wildcards.task].get("model")
    return model_dir(name) if name else None


rule e6_overhead:
    input:
        provenance=expand(f"{MODELS_DIR}/{{model}}/provenance.json", model=MODELS),
    output:
        table=report(
            "results/tables/e6_overhead.csv",
            caption=caption("e6_overhead"),
            category="C5 PG-OP",
        ),
    log:
        "logs/e6/overhead.log",
    params:
        model_dirs={m: model_dir(m) for m in MODELS},
        reference_configs=E6["reference_configs"],
        pgop=E6["pgop"],
        bound=E6["decision"]["overhead_bound"],
    script:
        "../scripts/e6_overhead.py"


rule e6_model_checks:
    input:
        provenance=f"{MODELS_DIR}/{{model}}/provenance.json",
    output:
        "results/e6/checks/{model}.parquet",
    log:
        "logs/e6/model_checks/{model}.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        model_dir=lambda wc: model_dir(wc.model),
        corpus=config["corpus"],
        checks=E6["checks"],
        pgop=E6["pgop"],
        device=config["device"],
    script:
        "../scripts/e6_model_checks.py"


rule e6_checks_table:
    input:
        expand("results/e6/checks/{model}.parquet", model=MODELS),
    output:
        long="results/e6/checks.parquet",
        table=report(
            "results/tables/e6_checks.csv",
            caption=caption("e6_checks"),
            category="C5 PG-OP",
        ),
    log:
        "logs/e6/checks_table.log",
    script:
        "../scripts/e6_checks_table.py"


rule e6_train:
    input:
        e6_task_inputs,
    output:
        log=f"{E6_RUN}/log.parquet",
        gates=f"{E6_RUN}/gates.parquet",
        identifiability=f"{E6_RUN}/identifiability.parquet",
    log:
        "logs/e6/train/{task}/{arm}/seed{seed}.log",
    benchmark:
        "logs/e6/train/{task}/{arm}/seed{seed}.benchmark.tsv"
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        task=lambda wc: E6["training"]["tasks"][wc.task],
        model_dir=e6_task_model_dir,
        corpus_path=config["corpus"]["path"],
        pgop=E6["pgop"],
        log_every=E6["training"]["log_every"],
        identifiability=E6["identifiability"],
        device=config["device"],
    script:
        "../scripts/e6_train.py"


rule e6_training_tables:
    input:
        logs=[f"{run}/log.parquet" for run in E6_RUNS],
        gates=[f"{run}/gates.parquet" for run in E6_RUNS],
        identifiability=[f"{run}/identifiability.parquet" for run in E6_RUNS],
    output:
        training_log="results/e6/training_log.parquet",
        gate_profiles="results/e6/gate_profiles.parquet",
        identifiability="results/e6/identifiability.parquet",
        scores=report(
            "results/tables/e6_scores.csv",
            caption=caption("e6_scores"),
            category="C5 PG-OP",
        ),
        summary=report(
            "results/tables/e6_score_summary.csv",
            caption=caption("e6_score_summary"),
            category="C5 PG-OP",
        ),
        identifiability_table=report(
            "results/tables/e6_identifiability.csv",
            caption=caption("e6_identifiability"),
            category="C5 PG-OP",
        ),
        run_times=report(
            "results/tables/e6_run_times.csv",
            caption=caption("e6_run_times"),
            category="C5 PG-OP",
        ),
    log:
        "logs/e6/training_tables.log",
    params:
        scores=E6["training"]["scores"],
        noise_k=E6["decision"]["noise_k"],
    script:
        "../scripts/e6_training_tables.py"


rule e6_training_curves:
    input:
        "results/e6/training_log.parquet",
    output:
        png=report(
            "results/figures/e6_training_curves.png",
            caption=caption("e6_training_curves"),
            category="C5 PG-OP",
        ),
        svg="results/figures/e6_training_curves.svg",
    log:
        "logs/e6/training_curves.log",
    script:
        "../scripts/e6_training_curves.py"


rule e6_gate_profiles:
    input:
        "results/e6/gate_profiles.parquet",
    output:
        png=report(
            "results/figures/e6_gate_profiles.png",
            caption=caption("e6_gate_profiles"),
            category="C5 PG-OP",
        ),
        svg="results/figures/e6_gate_profiles.svg",
    log:
        "logs/e6/gate_profiles.log",
    script:
        "../scripts/e6_gate_profiles.py"


rule e6_verdict:
    input:
        overhead="results/tables/e6_overhead.csv",
        checks="results/e6/checks.parquet",
        identifiability="results/e6/identifiability.parquet",
        summary="results/tables/e6_score_summary.csv",
    output:
        "results/verdicts/C5.json",
    log:
        "logs/e6/verdict.log",
    params:
        decision=E6["decision"],
    script:
        "../scripts/e6_verdict.py"
