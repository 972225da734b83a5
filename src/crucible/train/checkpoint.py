"""Checkpoints: safetensors for every tensor + a JSON of everything else; never pickles (docs/design.md §8).

A checkpoint is a pair ``<name>.safetensors`` / ``<name>.json``. Model weights, optimizer moments and
RNG states are tensors; the step, the resolved config, the optimizer's hyper-parameters and the
provenance go into the JSON. Both files are written to temporary names and renamed, JSON last, so a
crash at any moment leaves the previous checkpoint loadable. Under ``torchrun`` every rank calls
:func:`save_checkpoint`; rank 0 writes and the others wait for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import InputError
from ..run_config import config_diff
from .distributed import barrier, is_main

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_weights", "checkpoint_exists"]


class CheckpointError(InputError):
    """A checkpoint is missing, truncated, or was made with another configuration."""


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: Path, model: torch.nn.Module, meta: dict, optimizer: torch.optim.Optimizer | None = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``path.safetensors`` + ``path.json`` atomically (``path`` without suffix); rank 0 only."""
    if not is_main():
        barrier()
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(meta)
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _flatten_optimizer(optimizer)
        tensors.update(opt_tensors)
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()})
    st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
    # the step goes into both files: a stop between the two renames below leaves a pair load refuses
    stamp = {"format": "crucible-checkpoint-1", **({"step": str(meta["step"])} if "step" in meta else {})}
    save_file(tensors, str(st) + ".tmp", metadata=stamp)
    js_tmp = Path(str(js) + ".tmp")
    js_tmp.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(str(st) + ".tmp", st)
    os.replace(js_tmp, js)
    barrier()


def checkpoint_exists(path: Path) -> bool:
    path = Path(path)
    return path.with_suffix(".safetensors").is_file() and path.with_suffix(".json").is_file()


def load_checkpoint(path: Path, expect_config: dict | None = None, device: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of the checkpoint ``path`` (``x.safetensors`` or ``x``: the ``.json`` is found beside it).
    Refuses a truncated file, and a checkpoint whose JSON ``config`` differs from ``expect_config`` (naming the
    differing keys)."""
    path = Path(path)
    st, js = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not checkpoint_exists(path):
        raise CheckpointError(f"{st}: checkpoint not found (needs {st.name} and {js.name})")
    try:
        meta = json.loads(js.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{js}: corrupt checkpoint metadata ({e}); delete {js.name} and {st.name} and rerun "
                              "the rule that wrote them") from e
    try:
        tensors = load_file(str(st), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{st}: truncated or corrupt safetensors file ({e}); delete {st.name} and {js.name} "
                              "and rerun the rule that wrote them") from e
    with safe_open(str(st), framework="pt") as f:
        st_step = (f.metadata() or {}).get("step")
    if st_step is not None and str(meta.get("step")) != st_step:
        raise CheckpointError(f"{st}: weights of step {st_step} but {js.name} of step {meta.get('step')} (a save was "
                              "interrupted between its two files); delete both to restart from scratch")
    if expect_config is not None and meta.get("config") != expect_config:
        keys = config_diff(meta.get("config") or {}, expect_config)
        shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        raise CheckpointError(f"{st}: made with another configuration of this run (differs in {shown}); the "
                              "workflow retrains it when those settings change; by hand, delete the checkpoint or "
                              "use the config it was made with")
    return tensors, meta


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str = "checkpoint",
                 strict: bool = True) -> None:
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"{source}: tensor {k!r} has shape {tuple(v.shape)}, the model expects "
                                  f"{tuple(own[k].shape)} (checkpoint from another config?)")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if strict and (missing or unexpected):
        raise CheckpointError(f"{source}: does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
