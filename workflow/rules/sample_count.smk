# Stage: FID/KID/precision/recall against the number of images (crucible.evaluation.stages.sample_count): the
# real-vs-real floor and a few SCVAR variants' samples at a geometric grid of n up to scvar.sample.scenes; and two
# figures: that one, and the full pipeline's controllability per condition source (from summary.csv).


# `uncond` and the first conditional variant of the config: the no-control reference and one method
SAMPLE_COUNT_VARIANTS = [v for v in config["scvar"]["variants"] if v == "uncond"] + [
    v for v, spec in config["scvar"]["variants"].items() if (spec or {}).get("variant") != "uncond"
][:1]


rule sample_count:
    input:
        tensors=f"{RESULTS}/tensors/test.safetensors",
        encoder=f"{RESULTS}/judges/encoder.safetensors",
        samples=expand(
            f"{SCVAR_DIR}/{{variant}}/seed{{seed}}/samples.safetensors", variant=SAMPLE_COUNT_VARIANTS, seed=SEEDS
        ),
    output:
        f"{RESULTS}/sample_count/eval.json",
    log:
        f"logs/{PROFILE}/sample_count.log",
    benchmark:
        f"benchmarks/{PROFILE}/sample_count.tsv",
    params:
        config=CONFIG,
        settings=section_hash("evaluation", "seed"),  # KID subset size and PR's k; the seed draws the subsets
        scenes=config["scvar"]["sample"]["scenes"],  # the largest n of the grid
        tensors=lambda wc, input: Path(input.tensors).parent,
        judges=lambda wc, input: Path(input.encoder).parent,
        samples=lambda wc, input: " ".join(f"{Path(p).parents[1].name}={p}" for p in input.samples),
    threads: 1
    conda:
        ENV
    resources:
        **profile_resources("sample_count", mem_mb=2000, runtime=10),
    shell:
        "crucible evaluate sample-count --config {params.config} --tensors {params.tensors}"
        " --judges {params.judges} --samples {params.samples} --out {output} --threads {threads} 2> {log}"


rule paper_figure_sample_count:
    input:
        rules.sample_count.output,
        tolerances="evaluation/tolerances.yaml",  # each metric's better side: arrows
    output:
        png=report(
            f"{PAPER}/figures/sample_count.png",
            caption="../report/figure_sample_count.rst",
            category="Figures",
            labels={"figure": "sample_count"},
        ),
        pdf=f"{PAPER}/figures/sample_count.pdf",
    log:
        f"logs/{PROFILE}/paper_figure/sample_count.log",
    benchmark:
        f"benchmarks/{PROFILE}/paper_figure_sample_count.tsv",
    params:
        config=CONFIG,
        results=lambda wc, input: Path(input[0]).parents[1],
    conda:
        ENV
    resources:
        **profile_resources("paper_figure_sample_count", mem_mb=1000, runtime=5),
    shell:
        "crucible paper figure sample_count --config {params.config} --results {params.results}"
        " --out {output.png} 2> {log}"


rule paper_figure_control:
    input:
        summary=rules.aggregate.output.summary,
        tolerances="evaluation/tolerances.yaml",  # each metric's better side: arrows
    output:
        png=report(
            f"{PAPER}/figures/control.png",
            caption="../report/figure_control.rst",
            category="Figures",
            labels={"figure": "control"},
        ),
        pdf=f"{PAPER}/figures/control.pdf",
    log:
        f"logs/{PROFILE}/paper_figure/control.log",
    benchmark:
        f"benchmarks/{PROFILE}/paper_figure_control.tsv",
    params:
        config=CONFIG,
        settings=section_hash("data", "cam", "scvar"),  # seen / held-out types, hot-plug n, variant order
        results=lambda wc, input: Path(input.summary).parent,
    conda:
        ENV
    resources:
        **profile_resources("paper_figure_control", mem_mb=1000, runtime=5),
    shell:
        "crucible paper figure control --config {params.config} --results {params.results}"
        " --out {output.png} 2> {log}"


SAMPLE_COUNT_RESULTS = [f"{RESULTS}/sample_count/eval.json"] + expand(
    f"{PAPER}/figures/{{name}}.{{ext}}", name=["sample_count", "control"], ext=["png", "pdf"]
)
