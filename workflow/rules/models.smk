# Models: one rule fetches every configured model into models/<name>/.


rule fetch_model:
    input:
        fetch_inputs,
    output:
        provenance=f"{MODELS_DIR}/{{model}}/provenance.json",
    log:
        "logs/fetch_model/{model}.log",
    params:
        spec=lambda wc: config["models"][wc.model],
        models_dir=MODELS_DIR,
    script:
        "../scripts/fetch_model.py"
