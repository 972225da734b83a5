# Stage: the seed spread of what the DAG trains once (the tokenizer): the same training and evaluation with the
# extra seeds of `variation.tokenizer_seeds`, beside the DAG's own (the first of `seeds`), and a table of each
# metric's spread (crucible.evaluation.results.variation). Not part of `all`: `snakemake --cores all variation`.
# Its measured spread is what the tokenizer's bands in evaluation/tolerances.yaml are sized from.
VARIATION_DIR = f"{RESULTS}/variation"
TOKENIZER_SPREAD_SEEDS = [s for s in config.get("variation", {}).get("tokenizer_seeds", []) if s != SEEDS[0]]


# the DAG's own tokenizer rules (scvar.smk) with a {seed} wildcard: same shell line, other paths
use rule tokenizer_train as tokenizer_seed_train with:
    output:
        model=f"{VARIATION_DIR}/tokenizer/seed{{seed}}/model.safetensors",
        meta=f"{VARIATION_DIR}/tokenizer/seed{{seed}}/model.json",
        log=f"{VARIATION_DIR}/tokenizer/seed{{seed}}/loss.csv",
    log:
        f"logs/{PROFILE}/tokenizer_seed_train/seed{{seed}}.log",
    benchmark:
        f"benchmarks/{PROFILE}/tokenizer_seed_train/seed{{seed}}.tsv",
    params:
        settings=section_hash("tokenizer"),  # the seed is the wildcard's: adding to `seeds` retrains none of these
    priority: 0
    resources:
        **profile_resources("tokenizer_seed_train", mem_mb=4000, runtime=60),


use rule tokenizer_eval as tokenizer_seed_eval with:
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
    resources:
        **profile_resources("tokenizer_seed_eval", mem_mb=4000, runtime=10),


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
