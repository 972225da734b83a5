# Stage: the multi-condition dataset, rendered here or imported (data.source), and its packed tensors.
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
            settings=cfglib.config_hash(render_config(config)),
        threads: workflow.cores
        conda:
            ENV
        resources:
            **profile_resources("render_dataset", mem_mb=4000, runtime=120),
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
    conda:
        ENV
    resources:
        **profile_resources("tensors", mem_mb=4000, runtime=30),
    shell:
        "crucible data tensors --data {input} --out {params.out} 2> {log}"
