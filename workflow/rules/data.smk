# Stage: the multi-condition dataset, rendered here or imported (data.source), and its figure.
from crucible.data.importer import dag_splits, import_config, source_fingerprint

SOURCE = config["data"].get("source") or {"kind": "render"}
# the splits packed for training: rendered data has all three; an import needs train and test (val optional)
DATA_SPLITS = ["train", "val", "test"] if SOURCE["kind"] == "render" else dag_splits(SOURCE["root"])


if SOURCE["kind"] == "render":

    rule render_dataset:
        output:
            directory(DATA),
        log:
            f"logs/{PROFILE}/render_dataset.log",
        benchmark:
            f"benchmarks/{PROFILE}/render_dataset.tsv",
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

else:

    rule import_dataset:
        output:
            directory(DATA),
        log:
            f"logs/{PROFILE}/import_dataset.log",
        benchmark:
            f"benchmarks/{PROFILE}/import_dataset.tsv",
        params:
            config=CONFIG,
            root=str(Path(SOURCE["root"]).resolve()),  # relative to the working directory; `..` allowed
            depth_scale=SOURCE.get("depth_scale", 0.001),
            section=cfglib.config_hash(import_config(config)),
            source=source_fingerprint(SOURCE["root"]),  # reruns when a file under the root changes
        conda:
            ENV
        resources:
            mem_mb=4000,
            runtime=120,
            gpu=0,
        shell:
            "crucible data import {params.root:q} --out {output} --depth-scale {params.depth_scale}"
            " --config {params.config} 2> {log}"


rule dataset_figure:
    input:
        DATA,
    output:
        png=report(f"{PAPER}/figures/dataset.png", caption="../report/figure_dataset.rst", category="Figures"),
        pdf=f"{PAPER}/figures/dataset.pdf",
    log:
        f"logs/{PROFILE}/dataset_figure.log",
    benchmark:
        f"benchmarks/{PROFILE}/dataset_figure.tsv",
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
