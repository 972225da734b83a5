# Stage: render the multi-condition dataset and draw its figure.


rule render_dataset:
    output:
        directory(DATA),
    log:
        f"logs/{PROFILE}/render_dataset.log",
    params:
        config=CONFIG,
        render=cfglib.config_hash(render_config(config)),
    threads: workflow.cores
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    shell:
        "crucible data render --config {params.config} --out {output} --threads {threads} 2> {log}"


rule dataset_figure:
    input:
        DATA,
    output:
        png=report(f"{PAPER}/figures/dataset.png", caption="../report/figure_dataset.rst", category="Figures"),
        pdf=f"{PAPER}/figures/dataset.pdf",
    log:
        f"logs/{PROFILE}/dataset_figure.log",
    params:
        config=CONFIG,
        figures=section_hash("figures"),
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=10,
        gpu=0,
    shell:
        "crucible figure dataset --config {params.config} --data {input} --out {output.png} 2> {log}"
