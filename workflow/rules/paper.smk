# Stage: the paper's tables and figures, from the aggregated results. Each output the report shows is
# marked with report(...) and a caption in workflow/report/, so `snakemake --report report.html` bundles them.
from types import SimpleNamespace

from crucible.paper.commands import FIGURES  # the figure names, declared once
from crucible.paper.tables import TABLES

PAPER_TABLES = list(TABLES)
TABLE_FORMATS = ["md", "tex", "csv"]
QUALITATIVE_SCENES = 2  # test scenes in the qualitative grid (rows = scenes x condition sources)


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
        settings=section_hash("figures"),
    conda:
        ENV
    resources:
        **profile_resources("dataset_figure", mem_mb=1000, runtime=10),
    shell:
        "crucible paper figure dataset --config {params.config} --data {input} --out {output.png} 2> {log}"


rule paper_tables:
    input:
        summary=rules.aggregate.output.summary,
        tolerances="evaluation/tolerances.yaml",  # each metric's better side: bold marks, arrows
        paired=rules.aggregate.output.paired,
    output:
        expand(f"{PAPER}/tables/{{name}}.{{ext}}", name=PAPER_TABLES, ext=TABLE_FORMATS),
        html=[
            report(
                f"{PAPER}/tables/{name}.html",
                caption=f"../report/table_{name}.rst",
                category="Tables",
                labels={"table": name},
            )
            for name in PAPER_TABLES
        ],
        index=f"{PAPER}/tables/index.md",
    log:
        f"logs/{PROFILE}/paper_tables.log",
    benchmark:
        f"benchmarks/{PROFILE}/paper_tables.tsv",
    params:
        config=CONFIG,
        settings=section_hash("data", "cam", "scvar"),
        results=lambda wc, input: Path(input.summary).parent,
        out=lambda wc, output: Path(output.index).parent,
    conda:
        ENV
    resources:
        **profile_resources("paper_tables", mem_mb=1000, runtime=5),
    shell:
        "crucible paper tables --config {params.config} --results {params.results} --out {params.out} 2> {log}"


rule paper_figure_hotplug:
    input:
        summary=rules.aggregate.output.summary,
        paired=rules.aggregate.output.paired,  # the per-n difference E_new - scratch and its Holm p
        tolerances="evaluation/tolerances.yaml",  # each metric's better side: bold marks, arrows
    output:
        png=report(
            f"{PAPER}/figures/hotplug.png",
            caption="../report/figure_hotplug.rst",
            category="Figures",
            labels={"figure": "hotplug"},
        ),
        pdf=f"{PAPER}/figures/hotplug.pdf",
    log:
        f"logs/{PROFILE}/paper_figure/hotplug.log",
    benchmark:
        f"benchmarks/{PROFILE}/paper_figure_hotplug.tsv",
    params:
        config=CONFIG,
        results=lambda wc, input: Path(input.summary).parent,
    conda:
        ENV
    resources:
        **profile_resources("paper_figure_hotplug", mem_mb=1000, runtime=5),
    shell:
        "crucible paper figure hotplug --config {params.config} --results {params.results}"
        " --out {output.png} 2> {log}"


rule paper_figure_ecfm:
    input:
        summary=rules.aggregate.output.summary,
        tolerances="evaluation/tolerances.yaml",  # each metric's better side: bold marks, arrows
    output:
        png=report(
            f"{PAPER}/figures/ecfm.png",
            caption="../report/figure_ecfm.rst",
            category="Figures",
            labels={"figure": "ecfm"},
        ),
        pdf=f"{PAPER}/figures/ecfm.pdf",
    log:
        f"logs/{PROFILE}/paper_figure/ecfm.log",
    benchmark:
        f"benchmarks/{PROFILE}/paper_figure_ecfm.tsv",
    params:
        config=CONFIG,
        settings=section_hash("scvar"),
        results=lambda wc, input: Path(input.summary).parent,
    conda:
        ENV
    resources:
        **profile_resources("paper_figure_ecfm", mem_mb=1000, runtime=5),
    shell:
        "crucible paper figure ecfm --config {params.config} --results {params.results} --out {output.png} 2> {log}"


rule paper_figure_curves:
    input:
        cam=expand(f"{RESULTS}/cam/{{variant}}/seed{{seed}}/loss.csv", variant=CAM_VARIANTS, seed=SEEDS),
        tokenizer=rules.tokenizer_train.output.log,
        base=f"{SCVAR_DIR}/base/seed{SEEDS[0]}/loss.csv",
        scvar=expand(f"{SCVAR_DIR}/{{variant}}/seed{{seed}}/loss.csv", variant=SCVAR_VARIANTS, seed=SEEDS),
    output:
        png=report(
            f"{PAPER}/figures/curves.png",
            caption="../report/figure_curves.rst",
            category="Figures",
            labels={"figure": "curves"},
        ),
        pdf=f"{PAPER}/figures/curves.pdf",
    log:
        f"logs/{PROFILE}/paper_figure/curves.log",
    benchmark:
        f"benchmarks/{PROFILE}/paper_figure_curves.tsv",
    params:
        config=CONFIG,
        results=lambda wc, input: Path(input.tokenizer).parents[1],
    conda:
        ENV
    resources:
        **profile_resources("paper_figure_curves", mem_mb=1000, runtime=5),
    shell:
        "crucible paper figure curves --config {params.config} --results {params.results} --out {output.png}"
        " 2> {log}"


rule paper_figure_qualitative:
    input:
        samples=expand(f"{SCVAR_DIR}/{{variant}}/seed{SEEDS[0]}/samples.safetensors", variant=SCVAR_VARIANTS),
        cams=list(cam_aligners(SimpleNamespace(seed=SEEDS[0])).values()),
        tensors=f"{RESULTS}/tensors/test.safetensors",
        # each sample's control error under it; read from <results>/judges/ (paper.qualitative_figure.judge_path)
        judge=f"{RESULTS}/judges/depth.safetensors",
        # the tokenizer's reconstructions (the ceiling column; paper.qualitative_figure.recon_path)
        recon=f"{SCVAR_DIR}/{CEILING}/seed{SEEDS[0]}/samples.safetensors",
    output:
        png=report(
            f"{PAPER}/figures/qualitative.png",
            caption="../report/figure_qualitative.rst",
            category="Figures",
            labels={"figure": "qualitative"},
        ),
        pdf=f"{PAPER}/figures/qualitative.pdf",
    log:
        f"logs/{PROFILE}/paper_figure/qualitative.log",
    benchmark:
        f"benchmarks/{PROFILE}/paper_figure_qualitative.tsv",
    params:
        config=CONFIG,
        results=lambda wc, input: Path(input.tensors).parents[1],
        seed=SEEDS[0],
        scenes=QUALITATIVE_SCENES,
    threads: 1
    conda:
        ENV
    resources:
        **profile_resources("paper_figure_qualitative", mem_mb=2000, runtime=10),
    shell:
        "crucible paper figure qualitative --config {params.config} --results {params.results}"
        " --tensors {input.tensors}"
        " --seed {params.seed} --scenes {params.scenes} --out {output.png} --threads {threads} 2> {log}"


# drawn elsewhere: the dataset figure above (from the data), validity in validity.smk, control and sample-count
# in sample_count.smk
PAPER_FIGURES = [f for f in FIGURES if f not in ("dataset", "validity", "control", "sample_count")]
PAPER_RESULTS = (
    expand(f"{PAPER}/tables/{{name}}.{{ext}}", name=PAPER_TABLES, ext=[*TABLE_FORMATS, "html"])
    + [f"{PAPER}/tables/index.md"]
    + expand(f"{PAPER}/figures/{{name}}.{{ext}}", name=PAPER_FIGURES, ext=["png", "pdf"])
)


# Runtime per rule (crucible.paper.runtime) from the benchmark file of every job. Its input is every other result
# of the DAG (Snakefile, DAG_RESULTS), so it runs last, when every job of the run has written its benchmark file;
# it has no benchmark of its own (it would read its own previous one).
RUNTIME_RESULTS = expand(f"{PAPER}/tables/runtime.{{ext}}", ext=["md", "csv", "tex", "html"])


rule runtime_table:
    input:
        lambda wc: DAG_RESULTS,
    output:
        expand(f"{PAPER}/tables/runtime.{{ext}}", ext=["md", "csv", "tex"]),
        html=report(
            f"{PAPER}/tables/runtime.html",
            caption="../report/table_runtime.rst",
            category="Tables",
            labels={"table": "runtime"},
        ),
    log:
        f"logs/{PROFILE}/runtime_table.log",
    params:
        benchmarks=f"benchmarks/{PROFILE}",
        out=lambda wc, output: Path(output.html).parent,
    conda:
        ENV
    resources:
        **profile_resources("runtime_table", mem_mb=500, runtime=2),
    shell:
        "crucible paper runtime --benchmarks {params.benchmarks} --out {params.out} 2> {log}"
