"""VOLO networks: architecture table, blocks, outlook attention, weights I/O and the `create_model` API."""

from volo.models.registry import create_model, list_models
from volo.models.variants import VARIANTS, EvalConfig, VoloArch
from volo.models.volo import Volo, VoloTrainOutput
from volo.models.weights import load_weights, read_state_dict, save_weights

__all__ = [
    "VARIANTS",
    "EvalConfig",
    "Volo",
    "VoloArch",
    "VoloTrainOutput",
    "create_model",
    "list_models",
    "load_weights",
    "read_state_dict",
    "save_weights",
]
