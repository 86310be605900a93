# Claims: merge every experiment's verdict into results/claims.json, and record
# the software and hardware of the run for the methods page.


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
        "results/run_record.json",
    log:
        "logs/run_record.log",
    params:
        models=config["models"],
        corpus=config["corpus"],
        tolerances=config["tolerances"],
        device=config["device"],
    script:
        "../scripts/run_record.py"
