"""The smoke profile shrunk further for library-level tests: 16x16 scenes at 2 spp, CAM at 16x16."""

from pathlib import Path

from crucible import config as cfglib

ROOT = Path(__file__).resolve().parents[1]


def small_cfg(scenes: tuple[int, int, int] = (6, 2, 4), **replace: dict) -> dict:
    """A validated config with ``scenes`` (train, val, test) and, for each ``replace`` entry, the setting at a
    dotted path (``__`` for the dots: ``cam__hotplug__train={...}``) replaced as a whole."""
    cfg = cfglib.resolve(ROOT / "config", given={"profile": "smoke"})
    cfg["data"]["image_size"] = 16
    cfg["data"]["scenes"] = dict(zip(("train", "val", "test"), scenes, strict=True))
    cfg["data"]["spp"] = 2
    cfg["cam"]["resolution"] = 16
    # settings that depend on the image size and split sizes, kept consistent (crucible.config_rules)
    cfg["tokenizer"]["model"]["scales"] = [1, 2, 4]  # the smoke tokenizer's latent side at 16x16
    cfg["cam"]["hotplug"]["n"] = sorted({min(2, scenes[0]), scenes[0]})
    cfg["evaluation"]["pr_k"] = 1
    for path, value in replace.items():
        *parents, key = path.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        node[key] = value
    return cfglib.validate(cfg)


def tiny_variants(stage: str) -> dict[str, dict]:
    """The ``cam`` or ``scvar`` variants of the default (tiny) profile: the configs are the only registry of
    variants, so the tests build exactly what the DAG trains."""
    return dict(cfglib.resolve(ROOT / "config", given={"profile": "tiny"})[stage]["variants"])
