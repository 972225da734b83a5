# CRUCIBLE-bench workflow. Thin on purpose: rules live in workflow/rules/<stage>.smk, logic in src/crucible.
#   snakemake --cores all                              # default profile (tiny)
#   snakemake --cores all --configfile config/smoke.yaml   # or: --config profile=smoke
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/tiny.yaml"


# the front page of `snakemake --report report.html` (make report)
report: "workflow/report/workflow.rst"


include: "workflow/rules/recovery.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/cam.smk"
include: "workflow/rules/scvar.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/validity.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/sample_count.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/variation.smk"


check_resource_rules()  # a profile's `resources` name only rules defined above


# every result of the DAG; the runtime table (paper.smk) comes after all of them, so that it reads the benchmark
# file of every job of the run
DAG_RESULTS = [
    DATA,
    f"{PAPER}/figures/dataset.png",
    *CAM_RESULTS,
    *SCVAR_RESULTS,
    *EVAL_RESULTS,
    *VALIDITY_RESULTS,
    f"{RESULTS}/summary.csv",
    *PAPER_RESULTS,
    *SAMPLE_COUNT_RESULTS,
    f"{RESULTS}/metrics.json",
]


rule all:
    input:
        DAG_RESULTS,
        RUNTIME_RESULTS,
    default_target: True
