"""Training: the shared explicit loop and safetensors checkpoints."""

from .checkpoint import CheckpointError, checkpoint_exists, load_checkpoint, load_weights, save_checkpoint
from .loop import LoopConfig, NonFiniteLossError, run_training, step_seed

__all__ = ["CheckpointError", "checkpoint_exists", "load_checkpoint", "load_weights", "save_checkpoint",
           "LoopConfig", "NonFiniteLossError", "run_training", "step_seed"]
