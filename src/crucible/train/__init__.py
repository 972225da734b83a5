"""Training: the shared explicit loop (single process or torchrun data-parallel) and safetensors checkpoints."""

from .checkpoint import CheckpointError, checkpoint_exists, load_checkpoint, load_weights, save_checkpoint
from .loop import LoopConfig, NonFiniteLossError, run_training, shard, step_seed, training_device

__all__ = ["CheckpointError", "checkpoint_exists", "load_checkpoint", "load_weights", "save_checkpoint",
           "LoopConfig", "NonFiniteLossError", "run_training", "shard", "step_seed", "training_device"]
