# Stage: the multi-condition dataset, rendered here or imported (data.source), and its packed tensors.
from crucible.data.importer import dag_splits, import_config, source_fingerprint
from crucible.data.shards import shard_plan, shard_range

SOURCE = config["data"].get("source") or {"kind": "render"}
# the splits packed for training: rendered data has all three; an import needs train and test (val optional)
DATA_SPLITS = ["train", "val", "test"] if SOURCE["kind"] == "render" else dag_splits(SOURCE["root"])


if SOURCE["kind"] == "render":
    # one job per shard (data.shard_scenes consecutive scenes of a split; data/shards.py): SLURM spreads them, and
    # a restart keeps the finished ones; the shards are temporary, their files are hard-linked into the dataset
    SHARDS = f"{DATA}.shards"

    wildcard_constraints:
        shard=r"(train|val|test)-\d{4}",

    rule render_shard:
        output:
            temp(directory(f"{SHARDS}/{{shard}}")),
        log:
            f"logs/{PROFILE}/render_shard/{{shard}}.log",
        benchmark:
            f"benchmarks/{PROFILE}/render_shard/{{shard}}.tsv",
        params:
            config=CONFIG,
            settings=cfglib.config_hash(render_config(config)),
            scenes=lambda wc: shard_range(config["data"], wc.shard),  # another data.shard_scenes: another shard
        threads: profile_threads("render_shard")
        conda:
            ENV
        resources:
            **profile_resources("render_shard", mem_mb=4000, runtime=120),
        shell:
            "crucible data render --config {params.config} --shard {wildcards.shard} --out {output}"
            " --threads {threads} 2> {log}"

    rule render_dataset:
        input:
            expand(f"{SHARDS}/{{shard}}", shard=shard_plan(config["data"])),
        output:
            directory(DATA),
        log:
            f"logs/{PROFILE}/render_dataset.log",
        benchmark:
            f"benchmarks/{PROFILE}/render_dataset.tsv",
        params:
            config=CONFIG,
            shards=lambda wc, input: Path(input[0]).parent,
            settings=cfglib.config_hash(render_config(config)),
        conda:
            ENV
        resources:
            **profile_resources("render_dataset", mem_mb=2000, runtime=30),
        shell:
            "crucible data gather --config {params.config} --shards {params.shards} --out {output} 2> {log}"

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
            settings=cfglib.config_hash(import_config(config)),
            source=source_fingerprint(SOURCE["root"]),  # reruns when a file under the root changes
        conda:
            ENV
        resources:
            **profile_resources("import_dataset", mem_mb=4000, runtime=120),
        shell:
            "crucible data import {params.root:q} --out {output} --depth-scale {params.depth_scale}"
            " --config {params.config} 2> {log}"


rule tensors:
    input:
        DATA,
    output:
        expand("{results}/tensors/{split}.safetensors", results=RESULTS, split=DATA_SPLITS),
    log:
        f"logs/{PROFILE}/tensors.log",
    benchmark:
        f"benchmarks/{PROFILE}/tensors.tsv",
    params:
        out=lambda wc, output: Path(output[0]).parent,
        pack_format=PACK_FORMAT,  # a new layout of the packs reruns this rule
    threads: profile_threads("tensors")
    conda:
        ENV
    resources:
        **profile_resources("tensors", mem_mb=4000, runtime=30),
    shell:
        "crucible data tensors --data {input} --out {params.out} --threads {threads} 2> {log}"
