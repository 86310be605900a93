# The book: Jupyter Book 1 over book/, reading only results/. Snakemake's own
# report is the other way to browse them: `snakemake --report results/report.html`
# (every figure and table that a rule marks with report(...), with its caption).


report: "../report/workflow.rst"


rule book:
    input:
        lambda wc: [f for group in TARGETS.values() for f in group],
        claims="results/claims.json",
        record="results/run_record.json",
        sources=sorted(str(p) for p in (REPO / "book").rglob("*") if p.is_file()),
    output:
        html="results/book/html/index.html",
    log:
        "logs/book.log",
    params:
        src=str(REPO / "book"),
        results="results",
    script:
        "../scripts/build_book.py"
