# Claims: merge every experiment's verdict into results/claims.json, and record
# the software and hardware of the run for the methods page. The record asks for
# the model rules' resources (a GPU when gpu_per_job is set), so that the device
# it names is the one they ran on. Merging the verdicts takes a second, so on a
# cluster it runs where Snakemake runs instead of waiting in the queue.


localrules:
    claims,


rule claims:
    input:
        lambda wc: list(VERDICT_FILES.values()),
    output:
        report("results/claims.json", caption=caption("claims"), category="Claims"),
    log:
        "logs/claims.log",
    script:
        "../scripts/claims.py"


rule run_record:
    input:
        provenance=expand(f"{MODELS_DIR}/{{model}}/provenance.json", model=MODELS),
    output:
        report("results/run_record.json", caption=caption("run_record"), category="Run"),
    log:
        "logs/run_record.log",
    threads: 1
    resources:
        gpu=config["gpu_per_job"],
    params:
        models=config["models"],
        corpus=config["corpus"],
        tolerances=config["tolerances"],
        device=config["device"],
    script:
        "../scripts/run_record.py"
