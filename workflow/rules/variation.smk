# Stage: the seed spread of what the DAG trains once (the tokenizer): the same training and evaluation with the
# extra seeds of `variation.tokenizer_seeds`, beside the DAG's own (the first of `seeds`), and a table of each
# metric's spread (crucible.evaluation.results.variation). Not part of `all`: `snakemake --cores all variation`.
# Its measured spread is what the tokenizer's bands in evaluation/tolerances.yaml are sized from.
VARIATION_DIR = f"{RESULTS}/variation"
TOKENIZER_SPREAD_SEEDS = [s for s in config.get("variation", {}).get("tokenizer_seeds", []) if s != SEEDS[0]]


rule tokenizer_seed_train:
    input:
        tensors=rules.tensors.output,
    output:
        model=f"{VARIATION_DIR}/tokenizer/seed{{seed}}/model.safetensors",
        meta=f"{VARIATION_DIR}/tokenizer/seed{{seed}}/model.json",
        log=f"{VARIATION_DIR}/tokenizer/seed{{seed}}/loss.csv",
    log:
        f"logs/{PROFILE}/tokenizer_seed_train/seed{{seed}}.log",
    benchmark:
        f"benchmarks/{PROFILE}/tokenizer_seed_train/seed{{seed}}.tsv",
    params:
        launch=launch,
        config=CONFIG,
        settings=section_hash("tokenizer"),
        tensors=tensor_dir,
        out=subpath(output.model, parent=True),
    threads: 2
    conda:
        ENV
    resources:
        **profile_resources("tokenizer_seed_train", mem_mb=4000, runtime=60),
    shell:
        "{params.launch} tokenizer train --config {params.config} --tensors {params.tensors} --out {params.out}"
        " --seed {wildcards.seed} --threads {threads} 2> {log}"


rule tokenizer_seed_eval:
    input:
        model=rules.tokenizer_seed_train.output.model,
        tensors=rules.tensors.output,
        encoder=f"{RESULTS}/judges/encoder.safetensors",
    output:
        f"{VARIATION_DIR}/tokenizer/seed{{seed}}/eval.json",
    log:
        f"logs/{PROFILE}/tokenizer_seed_eval/seed{{seed}}.log",
    benchmark:
        f"benchmarks/{PROFILE}/tokenizer_seed_eval/seed{{seed}}.tsv",
    params:
        config=CONFIG,
        settings=section_hash("tokenizer", "evaluation"),
        tensors=tensor_dir,
        judges=lambda wc, input: Path(input.encoder).parent,
    threads: 2
    conda:
        ENV
    resources:
        **profile_resources("tokenizer_seed_eval", mem_mb=4000, runtime=10),
    shell:
        "crucible tokenizer eval --config {params.config} --tensors {params.tensors} --model {input.model}"
        " --seed {wildcards.seed} --judges {params.judges} --out {output} --threads {threads} 2> {log}"


rule variation:
    input:
        rules.tokenizer_eval.output,
        expand(rules.tokenizer_seed_eval.output, seed=TOKENIZER_SPREAD_SEEDS),
        tolerances="evaluation/tolerances.yaml",
    output:
        csv=f"{VARIATION_DIR}/tokenizer_seeds.csv",
        md=f"{VARIATION_DIR}/tokenizer_seeds.md",
    log:
        f"logs/{PROFILE}/variation.log",
    params:
        evals=lambda wc, input: " ".join(p for p in input if p != input.tolerances),
        profile=PROFILE,
    conda:
        ENV
    resources:
        **profile_resources("variation", mem_mb=1000, runtime=5),
    shell:
        "crucible variation {params.evals} --tolerances {input.tolerances} --profile {params.profile}"
        " --out {output.csv} 2> {log}"
