# Regenerates the findings of Cirrincione (2026), arXiv:2604.23681, end to end:
# fetch models, run each experiment, aggregate verdicts, build the book.
#
#   snakemake --cores all                      the offline default (config/config.yaml)
#   snakemake --cores all --configfile config/paper.yaml --workflow-profile workflow/profiles/gpu
#   snakemake --cores all results/figures/e1_residual_depth.png    one figure


from snakemake.utils import min_version, validate

min_version("9.0")


configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/e1_depth.smk"
include: "workflow/rules/e2_genericity.smk"
include: "workflow/rules/e3_layernorm.smk"
include: "workflow/rules/e4_reachable.smk"
include: "workflow/rules/e5_heads.smk"
include: "workflow/rules/e6_pgop.smk"
include: "workflow/rules/e7_width_entropy.smk"
include: "workflow/rules/e8_symmetry.smk"
include: "workflow/rules/e9_ffn_width.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/book.smk"


rule all:
    input:
        all_targets,
