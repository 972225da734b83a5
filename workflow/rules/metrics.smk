# Stage: what DVC reads (dvc.yaml): flat metrics.json, plot CSVs and the headline numbers (paper/metrics.json for
# the default profile: the metrics of dvc.yaml's stage, one `dvc exp show` column each) of the aggregated results,
# and the page template that lets `dvc plots show` render offline. The stored baselines (evaluation/baselines/) are never
# written by the DAG: they are updated by hand, on purpose (README, "Comparing with the stored baselines").


rule dvc_metrics:
    input:
        summary=rules.aggregate.output.summary,
        template=".dvc/plots/offline.html",
    output:
        metrics=f"{RESULTS}/metrics.json",
        plots=directory(f"{RESULTS}/plots"),
        headline=f"{PAPER}/metrics.json",
    log:
        f"logs/{PROFILE}/dvc_metrics.log",
    benchmark:
        f"benchmarks/{PROFILE}/dvc_metrics.tsv",
    params:
        results=lambda wc, input: Path(input.summary).parent,
    conda:
        ENV
    resources:
        **profile_resources("dvc_metrics", mem_mb=1000, runtime=5),
    shell:
        "crucible metrics export --results {params.results} --metrics {output.metrics} --plots {output.plots}"
        " --headline {output.headline} 2> {log}"


rule dvc_plots_template:
    output:
        ".dvc/plots/offline.html",
    log:
        f"logs/{PROFILE}/dvc_plots_template.log",
    benchmark:
        f"benchmarks/{PROFILE}/dvc_plots_template.tsv",
    conda:
        ENV
    resources:
        **profile_resources("dvc_plots_template", mem_mb=500, runtime=2),
    shell:
        "crucible metrics html-template --out {output} 2> {log}"
