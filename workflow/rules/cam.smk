# Stage: CAM — train every (variant, seed), evaluate it, and run the hot-plug protocol.


rule cam_train:
    input:
        tensors=rules.tensors.output,
    output:
        model=f"{RESULTS}/cam/{{variant}}/seed{{seed}}/model.safetensors",
        meta=f"{RESULTS}/cam/{{variant}}/seed{{seed}}/model.json",
        log=f"{RESULTS}/cam/{{variant}}/seed{{seed}}/loss.csv",
    log:
        f"logs/{PROFILE}/cam_train/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{PROFILE}/cam_train/{{variant}}_seed{{seed}}.tsv",
    params:
        launch=launch,
        config=CONFIG,
        settings=train_hash(cam_run),  # not cam.hotplug / cam.eval: those retrain no CAM
        tensors=tensor_dir,
        out=subpath(output.model, parent=True),
    threads: 1  # small models: two 1-thread jobs get more done on 2 cores than one 2-thread job
    conda:
        ENV
    resources:
        **profile_resources("cam_train", mem_mb=4000, runtime=60),
    shell:
        "{params.launch} cam train --config {params.config} --variant {wildcards.variant} --seed {wildcards.seed}"
        " --tensors {params.tensors} --out {params.out} --threads {threads} 2> {log}"


rule cam_eval:
    input:
        model=rules.cam_train.output.model,
        tensors=rules.tensors.output,
    output:
        f"{RESULTS}/cam/{{variant}}/seed{{seed}}/eval.json",
    log:
        f"logs/{PROFILE}/cam_eval/{{variant}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{PROFILE}/cam_eval/{{variant}}_seed{{seed}}.tsv",
    params:
        config=CONFIG,
        settings=run_hash("data", cam=None),
        tensors=tensor_dir,
    threads: 1  # small models: two 1-thread jobs get more done on 2 cores than one 2-thread job
    conda:
        ENV
    resources:
        **profile_resources("cam_eval", mem_mb=4000, runtime=20),
    shell:
        "crucible cam eval --config {params.config} --variant {wildcards.variant} --seed {wildcards.seed}"
        " --tensors {params.tensors} --model {input.model} --out {output} --threads {threads} 2> {log}"


rule cam_hotplug:
    input:
        base=f"{RESULTS}/cam/full/seed{{seed}}/model.safetensors",
        tensors=rules.tensors.output,
    output:
        f"{RESULTS}/cam/hotplug/{{condition}}/n{{n}}/seed{{seed}}.json",
    log:
        f"logs/{PROFILE}/cam_hotplug/{{condition}}_n{{n}}_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{PROFILE}/cam_hotplug/{{condition}}_n{{n}}_seed{{seed}}.tsv",
    params:
        launch=launch,
        config=CONFIG,
        settings=run_hash("data", cam="full"),
        tensors=tensor_dir,
    threads: 1  # small models: two 1-thread jobs get more done on 2 cores than one 2-thread job
    conda:
        ENV
    resources:
        **profile_resources("cam_hotplug", mem_mb=4000, runtime=30),
    shell:
        "{params.launch} cam hotplug --config {params.config} --condition {wildcards.condition} --n-train {wildcards.n}"
        " --seed {wildcards.seed} --tensors {params.tensors} --base {input.base} --out {output}"
        " --threads {threads} 2> {log}"


CAM_RESULTS = expand(f"{RESULTS}/cam/{{variant}}/seed{{seed}}/eval.json", variant=CAM_VARIANTS, seed=SEEDS) + expand(
    f"{RESULTS}/cam/hotplug/{{condition}}/n{{n}}/seed{{seed}}.json",
    condition=config["data"]["held_out"],
    n=config["cam"]["hotplug"]["n"],
    seed=config["cam"]["hotplug"]["seeds"],
)
