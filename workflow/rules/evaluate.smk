# Stage: frozen judges (trained once per dataset), the generation metrics of every SCVAR sample set, speed.

from crucible.evaluation.judges import JUDGE_KINDS  # the judge kinds, declared once (judges/train.py)


rule judge_fit:
    input:
        tensors=rules.tensors.output,
    output:
        model=f"{RESULTS}/judges/{{kind}}.safetensors",
        quality=f"{RESULTS}/judges/{{kind}}.json",
    log:
        f"logs/{PROFILE}/judge_fit/{{kind}}.log",
    benchmark:
        f"benchmarks/{PROFILE}/judge_fit/{{kind}}.tsv",
    wildcard_constraints:
        kind="|".join(JUDGE_KINDS),
    params:
        launch=launch,
        config=CONFIG,
        settings=section_hash("judges", "seeds"),
        tensors=tensor_dir,
    threads: 1  # small models: two 1-thread jobs get more done on 2 cores than one 2-thread job
    conda:
        ENV
    resources:
        **profile_resources("judge_fit", mem_mb=4000, runtime=30),
    shell:
        "{params.launch} judges fit --config {params.config} --kind {wildcards.kind} --tensors {params.tensors}"
        " --out {output.model} --quality {output.quality} --threads {threads} 2> {log}"


rule scvar_eval:
    input:
        samples=rules.scvar_sample.output,
        judges=expand(f"{RESULTS}/judges/{{kind}}.safetensors", kind=JUDGE_KINDS),
        tensors=rules.tensors.output,
    output:
        f"{SCVAR_DIR}/{{variant}}/seed{{seed}}/eval.json",
    log:
        f"logs/{PROFILE}/scvar_eval/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{PROFILE}/scvar_eval/{{variant}}_seed{{seed}}.tsv",
    params:
        config=CONFIG,
        settings=section_hash("evaluation"),
        tensors=tensor_dir,
        judges=lambda wc, input: Path(input.judges[0]).parent,
    threads: 1  # small models: two 1-thread jobs get more done on 2 cores than one 2-thread job
    conda:
        ENV
    resources:
        **profile_resources("scvar_eval", mem_mb=4000, runtime=20),
    shell:
        "crucible evaluate samples --config {params.config} --variant {wildcards.variant} --seed {wildcards.seed}"
        " --samples {input.samples} --judges {params.judges} --tensors {params.tensors} --out {output}"
        " --threads {threads} 2> {log}"


# the floor/ceiling sample sets (crucible.evaluation.stages.bounds), evaluated like a variant's, first seed only
SCVAR_BOUND_EVALS = expand(f"{SCVAR_DIR}/{{variant}}/seed{SEEDS[0]}/eval.json", variant=SCVAR_BOUNDS)
EVAL_RESULTS = expand(f"{RESULTS}/judges/{{kind}}.json", kind=JUDGE_KINDS) + expand(
    f"{SCVAR_DIR}/{{variant}}/seed{{seed}}/eval.json", variant=SCVAR_VARIANTS, seed=SEEDS
) + SCVAR_BOUND_EVALS

rule bench:
    input:
        unpack(bench_models),
        tokenizer=rules.tokenizer_train.output.model,
        tensors=rules.tensors.output,
    output:
        f"{RESULTS}/speed/bench.json",
    log:
        f"logs/{PROFILE}/bench.log",
    benchmark:
        f"benchmarks/{PROFILE}/bench.tsv",
    params:
        config=CONFIG,
        settings=run_hash("evaluation", "data", scvar="uncond", cam="full"),  # timings, sampling, CAM size
        tensors=tensor_dir,
        models=bench_flags,
        seed=SEEDS[0],
    threads: workflow.cores  # alone on the machine: timings of a shared machine mean little
    conda:
        ENV
    resources:
        **profile_resources("bench", mem_mb=4000, runtime=30),
    shell:
        "crucible bench --config {params.config} --seed {params.seed} --tokenizer {input.tokenizer}"
        " --tensors {params.tensors} {params.models} --out {output} --threads {threads} --quiet 2> {log}"


ALL_EVALS = (
    [f for f in CAM_RESULTS]
    + [f"{TOK}/eval.json"]
    + expand(f"{RESULTS}/judges/{{kind}}.json", kind=JUDGE_KINDS)
    + expand(f"{SCVAR_DIR}/{{variant}}/seed{{seed}}/eval.json", variant=SCVAR_VARIANTS, seed=SEEDS)
    + SCVAR_BOUND_EVALS
    + [f"{RESULTS}/validity/eval.json"]
    + [f"{RESULTS}/speed/bench.json"]
)


rule aggregate:
    input:
        ALL_EVALS,
    output:
        results=f"{RESULTS}/results.csv",
        summary=f"{RESULTS}/summary.csv",
        paired=f"{RESULTS}/paired.csv",
    log:
        f"logs/{PROFILE}/aggregate.log",
    benchmark:
        f"benchmarks/{PROFILE}/aggregate.tsv",
    params:
        out=lambda wc, output: Path(output.summary).parent,
    conda:
        ENV
    resources:
        **profile_resources("aggregate", mem_mb=2000, runtime=10),
    shell:
        "crucible aggregate {input} --out {params.out} 2> {log}"
