"""volo: train VOLO vision transformers with token labeling, from one CPU to a Slurm cluster of GPUs."""

from volo.errors import VoloError
from volo.models import Volo, VoloTrainOutput, create_model, list_models, load_weights, save_weights

__version__ = "0.1.0"
__all__ = ["Volo", "VoloError", "VoloTrainOutput", "create_model", "list_models", "load_weights", "save_weights"]
