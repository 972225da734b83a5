# Stage: metric validity (crucible.evaluation.metrics.validity): every generation metric's noise floor on real test images,
# its response to graded known degradations (blur, noise, desaturation, the tokenizer's reconstructions, scenes
# re-rendered with one object removed, hues turned, materials changed) and a verdict per metric. Needs the judges
# (evaluate.smk), the tokenizer (scvar.smk) and the dataset folder itself (the scene parameters to re-render).


rule metric_validity:
    input:
        tensors=rules.tensors.output,
        judges=expand(f"{RESULTS}/judges/{{kind}}.safetensors", kind=JUDGE_KINDS),
        tokenizer=rules.tokenizer_train.output.model,
        data=DATA,
    output:
        f"{RESULTS}/validity/eval.json",
    log:
        f"logs/{PROFILE}/metric_validity.log",
    benchmark:
        f"benchmarks/{PROFILE}/metric_validity.tsv",
    params:
        config=CONFIG,
        settings=section_hash("evaluation", "seed"),  # KID/PR settings; the seed draws the half-splits and noise
        scenes=config["scvar"]["sample"]["scenes"],  # the half size: the variants' sample count
        tensors=tensor_dir,
        judges=lambda wc, input: Path(input.judges[0]).parent,
    threads: 2  # the re-rendered scenes go to one worker process per thread
    conda:
        ENV
    resources:
        **profile_resources("metric_validity", mem_mb=4000, runtime=20),
    shell:
        "crucible evaluate validity --config {params.config} --tensors {params.tensors} --data {input.data}"
        " --judges {params.judges} --tokenizer {input.tokenizer} --out {output} --threads {threads} 2> {log}"


rule paper_figure_validity:
    input:
        summary=rules.aggregate.output.summary,
        tolerances="evaluation/tolerances.yaml",  # each metric's better side: arrows
    output:
        png=report(
            f"{PAPER}/figures/validity.png",
            caption="../report/figure_validity.rst",
            category="Figures",
            labels={"figure": "validity"},
        ),
        pdf=f"{PAPER}/figures/validity.pdf",
    log:
        f"logs/{PROFILE}/paper_figure/validity.log",
    benchmark:
        f"benchmarks/{PROFILE}/paper_figure_validity.tsv",
    params:
        config=CONFIG,
        results=lambda wc, input: Path(input.summary).parent,
    conda:
        ENV
    resources:
        **profile_resources("paper_figure_validity", mem_mb=1000, runtime=5),
    shell:
        "crucible paper figure validity --config {params.config} --results {params.results}"
        " --out {output.png} 2> {log}"


VALIDITY_RESULTS = [f"{RESULTS}/validity/eval.json", f"{PAPER}/figures/validity.png", f"{PAPER}/figures/validity.pdf"]
