# Stage: tokenizer and SCVAR — tokenizer, unconditional base, every (variant, seed), sampling.
from crucible.evaluation.stages.bounds import BOUNDS


rule tokenizer_train:
    input:
        tensors=rules.tensors.output,
    output:
        model=f"{TOK}/model.safetensors",
        meta=f"{TOK}/model.json",
        log=f"{TOK}/loss.csv",
    log:
        f"logs/{PROFILE}/tokenizer_train.log",
    benchmark:
        f"benchmarks/{PROFILE}/tokenizer_train.tsv",
    params:
        launch=launch,
        config=CONFIG,
        settings=section_hash("tokenizer", "seeds"),
        tensors=tensor_dir,
        out=subpath(output.model, parent=True),
        seed=tokenizer_seed,
    priority: 100  # the head of the longest chain (tokenizer -> tokens -> base -> variants): start it first
    threads: 2
    conda:
        ENV
    resources:
        **profile_resources("tokenizer_train", mem_mb=4000, runtime=60),
    shell:
        "{params.launch} tokenizer train --config {params.config} --tensors {params.tensors} --out {params.out}"
        " --seed {params.seed} --threads {threads} 2> {log}"


rule tokenizer_eval:
    input:
        model=rules.tokenizer_train.output.model,
        tensors=rules.tensors.output,
        encoder=f"{RESULTS}/judges/encoder.safetensors",
    output:
        f"{TOK}/eval.json",
    log:
        f"logs/{PROFILE}/tokenizer_eval.log",
    benchmark:
        f"benchmarks/{PROFILE}/tokenizer_eval.tsv",
    params:
        config=CONFIG,
        settings=section_hash("tokenizer", "evaluation"),
        tensors=tensor_dir,
        judges=lambda wc, input: Path(input.encoder).parent,
        seed=tokenizer_seed,
    threads: 2
    conda:
        ENV
    resources:
        **profile_resources("tokenizer_eval", mem_mb=4000, runtime=10),
    shell:
        "crucible tokenizer eval --config {params.config} --tensors {params.tensors} --model {input.model}"
        " --seed {params.seed} --judges {params.judges} --out {output} --threads {threads} 2> {log}"


rule tokenize:
    input:
        model=rules.tokenizer_train.output.model,
        tensors=rules.tensors.output,
    output:
        f"{TOK}/tokens_train.safetensors",
    log:
        f"logs/{PROFILE}/tokenize.log",
    benchmark:
        f"benchmarks/{PROFILE}/tokenize.tsv",
    params:
        config=CONFIG,
        settings=section_hash("tokenizer"),
        tensors=tensor_dir,
    priority: 100
    threads: 2
    conda:
        ENV
    resources:
        **profile_resources("tokenize", mem_mb=4000, runtime=10),
    shell:
        "crucible tokenizer tokenize --config {params.config} --tensors {params.tensors} --model {input.model}"
        " --out {output} --threads {threads} 2> {log}"


rule scvar_train:
    input:
        unpack(lambda wc: {"base": scvar_base(wc)}),
        tensors=rules.tensors.output,
        tokens=rules.tokenize.output,
        tokenizer=rules.tokenizer_train.output.model,
    output:
        model=f"{SCVAR_DIR}/{{variant}}/seed{{seed}}/model.safetensors",
        meta=f"{SCVAR_DIR}/{{variant}}/seed{{seed}}/model.json",
        log=f"{SCVAR_DIR}/{{variant}}/seed{{seed}}/loss.csv",
    log:
        f"logs/{PROFILE}/scvar_train/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{PROFILE}/scvar_train/{{variant}}_seed{{seed}}.tsv",
    params:
        launch=launch,
        config=CONFIG,
        settings=train_hash(scvar_run),  # not scvar.sample: sampling more scenes retrains nothing
        tensors=tensor_dir,
        base=lambda wc, input: f"--base {input.base[0]}" if input.base else "",
        out=subpath(output.model, parent=True),
    priority: 50  # the base and the variants before the shorter CAM and judge jobs
    threads: 1  # small model: two 1-thread jobs beat one 2-thread job on 2 cores
    conda:
        ENV
    resources:
        **profile_resources("scvar_train", mem_mb=4000, runtime=60),
    shell:
        "{params.launch} scvar train --config {params.config} --variant {wildcards.variant} --seed {wildcards.seed}"
        " --tensors {params.tensors} --tokens {input.tokens} --tokenizer {input.tokenizer} {params.base}"
        " --out {params.out} --threads {threads} 2> {log}"


rule scvar_sample:
    input:
        unpack(cam_aligners),
        model=rules.scvar_train.output.model,
        tokenizer=rules.tokenizer_train.output.model,
        tensors=rules.tensors.output,
    output:
        f"{SCVAR_DIR}/{{variant}}/seed{{seed}}/samples.safetensors",
    log:
        f"logs/{PROFILE}/scvar_sample/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{PROFILE}/scvar_sample/{{variant}}_seed{{seed}}.tsv",
    params:
        config=CONFIG,
        settings=run_hash("data", scvar=None, cam="full"),
        tensors=tensor_dir,
        cams=cam_flag,
    threads: 1  # small models: two 1-thread jobs get more done on 2 cores than one 2-thread job
    conda:
        ENV
    resources:
        **profile_resources("scvar_sample", mem_mb=4000, runtime=30),
    shell:
        "crucible scvar sample --config {params.config} --seed {wildcards.seed} --model {input.model}"
        " --tokenizer {input.tokenizer} --tensors {params.tensors} --out {output} --cam {params.cams}"
        " --threads {threads} 2> {log}"


# floor and ceiling rows of the generation tables: the real test images and the tokenizer's reconstructions of
# the sampled scenes, written where a variant's samples go (first seed only: no training seed is involved)
SCVAR_BOUNDS = list(BOUNDS)


rule scvar_bounds_samples:
    input:
        unpack(bound_tokenizer),
        tensors=rules.tensors.output,
    output:
        f"{SCVAR_DIR}/{{variant}}/seed{{seed}}/samples.safetensors",
    log:
        f"logs/{PROFILE}/scvar_bounds_samples/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{PROFILE}/scvar_bounds_samples/{{variant}}_seed{{seed}}.tsv",
    wildcard_constraints:
        variant="|".join(SCVAR_BOUNDS),
    params:
        config=CONFIG,
        settings=section_hash("data", "tokenizer"),
        scenes=config["scvar"]["sample"]["scenes"],
        tensors=tensor_dir,
        tokenizer=bound_tokenizer_flag,
    threads: 1
    conda:
        ENV
    resources:
        **profile_resources("scvar_bounds_samples", mem_mb=4000, runtime=10),
    shell:
        "crucible scvar reference-samples --config {params.config} --variant {wildcards.variant}"
        " --tensors {params.tensors} {params.tokenizer} --out {output} --threads {threads} 2> {log}"


ruleorder: scvar_bounds_samples > scvar_sample


SCVAR_VARIANTS = list(config["scvar"]["variants"])
SCVAR_RESULTS = [f"{TOK}/eval.json"] + expand(
    f"{SCVAR_DIR}/{{variant}}/seed{{seed}}/samples.safetensors", variant=SCVAR_VARIANTS, seed=SEEDS
)
