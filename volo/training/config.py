"""The one typed config schema of a training run, loaded from a complete YAML recipe plus `--set` overrides.

A recipe (`volo/recipes/<name>.yaml`) lists every section below with every field; no inheritance. Overrides are
`section.key=value` strings whose value is parsed as YAML and checked against the field's type. The resolved config
(`RunConfig.to_dict()`, plain types only) is written to the run folder and into every checkpoint.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from volo.errors import VoloError

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"
"""The training data paths `data.loader` may name (see `volo.data.backends`)."""


@dataclass
class ModelConfig:
    name: str = "volo_d1"
    """Model name for `create_model` (volo_tiny, volo_d1 .. volo_d5)."""
    img_size: int = 224
    """Training resolution in pixels (a multiple of 16); sets the token grid img_size/16."""
    num_classes: int = 1000
    """Classes of the classifier heads; a fine-tune with another count re-initialises the heads."""
    drop_path_rate: float = 0.1
    """Stochastic depth at the last block (linear in the block index)."""
    drop_rate: float = 0.0
    """Dropout after pos_embed and in projections."""
    init_checkpoint: str | None = None
    """Weights to fine-tune from (ours or released); pos_embed is resized, heads dropped on a class change."""
    grad_checkpointing: bool = False
    """Recompute each block's activations in the backward: ~1/10 of the blocks' activation memory, ~1/3 more compute."""


@dataclass
class DataConfig:
    path: str | None = None
    """ImageFolder root holding `train/` and `val/` (one folder per class); `--data` on the command line."""
    train_split: str = "train"
    """Sub-folder with the training images."""
    val_split: str = "val"
    """Sub-folder with the evaluation images."""
    workers: int = 8
    """DataLoader worker processes per rank (0 = load in the training process); DALI/nvJPEG: reader threads."""
    loader: str = "pytorch"
    """Training data path: pytorch (PIL in DataLoader workers), dali (NVIDIA DALI; evaluation too) or nvjpeg."""
    loader_device: str | None = None
    """Where dali/nvjpeg decode and augment ("cpu", "cuda:N"); None: cuda:LOCAL_RANK on CUDA runs, else cpu."""
    rand_augment: str = "rand-m9-mstd0.5-inc1"
    """timm-style RandAugment spec; empty string disables it."""
    reprob: float = 0.25
    """Random-erasing probability (pixel mode)."""
    hflip: float = 0.5
    """Horizontal flip probability."""
    scale_min: float = 0.08
    """Smallest area fraction of RandomResizedCrop."""
    eval_crop_pct: float | None = None
    """Centre-crop fraction for evaluation; None uses the model's own (0.96 at 224, see variants.py)."""
    eval_batch_size: int = 128
    """Images per rank per evaluation step."""
    max_train_images: int | None = None
    """Use only N training images, spread over the classes (debug runs); None uses all."""
    max_val_images: int | None = None
    """Evaluate only N validation images, spread over the classes; None uses all."""


@dataclass
class TokenLabelConfig:
    label_root: str | None = None
    """Token-label store made by `volo label`; None trains with plain (image-level) labels."""
    size: int | None = None
    """Token-label grid side; None means img_size/16 (must equal it: token logits are on that grid)."""
    dense_weight: float = 0.5
    """Weight of the per-token loss."""
    cls_weight: float = 1.0
    """Weight of the class-token loss."""
    label_smoothing: float = 0.1
    """Smoothing of the (soft) targets."""
    mixtoken: bool = True
    """MixToken: paste a token-grid box from the reversed batch (needs token targets; plain labels work too)."""
    ground_truth: bool = False
    """Fine-tune option: class target = r*teacher + (1-r)*ground truth (r 0.5 on agreement, 0.9 otherwise)."""
    public_crop_pct: float | None = 0.956
    """Public-layout label files cover the centred square crop_pct x short side their generator saw (0.956: the
    released NFNet-F6 labels); null reads them as whole-image maps. `volo label` stores cover the whole image."""
    class_map: str | None = None
    """imagenet: a public-layout store's ImageNet-1k class ids are mapped onto the dataset's wnid folders (an
    ImageNet subset such as Imagenette); null: the ids are the dataset's own."""


@dataclass
class OptimConfig:
    lr_base: float = 1.6e-3
    """Peak learning rate for a global batch of 1024; the run uses lr_base * global_batch / 1024."""
    weight_decay: float = 0.05
    """AdamW weight decay (not applied to pos_embed, cls_token, biases and norm weights)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    fused: bool = True
    """Use the fused AdamW kernel (CUDA and CPU); it also skips non-finite steps without a host sync."""


@dataclass
class ScheduleConfig:
    epochs: int = 300
    """Cosine epochs (warmup included), not counting the cooldown."""
    warmup_epochs: int = 20
    """Linear warmup from warmup_lr to the peak LR."""
    warmup_lr: float = 1e-6
    """LR at step 0 (absolute, not scaled by batch)."""
    min_lr: float = 1e-5
    """LR at the end of the cosine and during cooldown (absolute)."""
    cooldown_epochs: int = 10
    """Epochs at min_lr after the cosine."""
    shape: str = "step"
    """'step': LR updated every optimiser step, cosine after the warmup; 'reference': sail-sg's exact schedule, one
    LR per epoch, cosine counted from epoch 0 over the warmup (see volo/training/schedule.py)."""


CUDA_GRAPH_MODES: tuple[str, ...] = ("reduce-overhead", "max-autotune")
"""The torch.compile modes that capture CUDA graphs (each step must then be marked, see `volo.training.step`)."""


@dataclass
class TrainConfig:
    batch_size: int = 128
    """Images per GPU (per process) per micro-step."""
    accumulation: int = 1
    """Micro-steps per optimiser step; global batch = world_size * batch_size * accumulation."""
    amp: str = "bf16"
    """Autocast dtype on CUDA: bf16, fp16 (with loss scaling) or none. CPU always runs float32."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    compile_mode: str = "default"
    """torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune, max-autotune-no-cudagraphs."""
    ema: bool = False
    """Keep an exponential moving average of the weights (evaluated and exported as well)."""
    ema_decay: float = 0.99996
    """EMA decay per optimiser step."""
    clip_grad: float | None = None
    """Clip the gradient norm to this value; None disables clipping."""
    seed: int = 42
    """Base seed; each rank uses seed + rank for augmentation, the sampler uses seed for the shuffle."""
    deterministic: bool = False
    """Deterministic algorithms, fixed seeds and workers=0: a resumed run repeats the losses exactly (CPU)."""
    log_every: int = 50
    """Steps between metric rows (and host syncs) in the log."""
    max_steps: int | None = None
    """Stop after this many optimiser steps in total (debug/bench); None runs the whole schedule."""
    progress: bool = True
    """Show a tqdm progress bar on rank 0; false prints a step line every log_every steps instead (Slurm logs)."""
    tensorboard: bool = False
    """Also write TensorBoard event files to <run folder>/tensorboard (needs the tensorboard package)."""
    wandb_project: str | None = None
    """Also log to this Weights & Biases project (nothing happens, with a warning, without the wandb package)."""
    max_bad_steps: int = 25
    """Stop (with a checkpoint) after this many consecutive optimiser steps with a NaN/inf loss (skipped)."""


@dataclass
class CheckpointConfig:
    output_dir: str = "runs"
    """Folder under which the run folder `<output_dir>/<run_name>` is made."""
    run_name: str | None = None
    """Run folder name; None uses the recipe name."""
    keep_last: int = 3
    """Keep the newest k epoch checkpoints (plus best and milestones)."""
    milestones: list[int] = field(default_factory=list)
    """Epochs whose checkpoints are never deleted."""
    every_steps: int = 0
    """Also checkpoint every N optimiser steps inside an epoch (0 = at epoch ends only)."""
    eval_every: int = 1
    """Evaluate every N epochs (and always after the last)."""


@dataclass
class RunConfig:
    """A complete training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    token_labels: TokenLabelConfig = field(default_factory=TokenLabelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    recipe: str = "custom"
    """Name of the recipe this config came from."""

    def to_dict(self) -> dict:
        """Plain dict/list/str/number/None only (safe for yaml and `torch.load(weights_only=True)`)."""
        return asdict(self)

    def validate(self) -> RunConfig:
        from volo.training.config_checks import validate

        validate(self)
        return self


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "token_labels": TokenLabelConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "checkpoint": CheckpointConfig,
}


# -- loading ------------------------------------------------------------------------------------------------
def list_recipes() -> list[str]:
    """Names of the recipes shipped in `volo/recipes/`."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_path(recipe: str | Path) -> Path:
    """A recipe name (`d1_224`) or a path to a YAML file -> the file."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise VoloError(f"Recipe file {path} does not exist; pass a recipe name ({', '.join(list_recipes())}).")
        return path
    shipped = RECIPE_DIR / f"{recipe}.yaml"
    if not shipped.is_file():
        raise VoloError(f"Unknown recipe {str(recipe)!r}; choose one of {', '.join(list_recipes())} or give a path.")
    return shipped


def load_config(recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a recipe (name or path), apply `section.key=value` overrides, validate."""
    path = recipe_path(recipe)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise VoloError(f"Recipe {path} is not valid YAML: {str(err).splitlines()[0]}.") from None
    if not isinstance(raw, dict):
        raise VoloError(f"Recipe {path} must be a mapping of sections ({', '.join(SECTIONS)}).")
    raw = dict(raw)
    raw.setdefault("recipe", path.stem)
    cfg = config_from_dict(raw, source=str(path))
    for item in overrides:
        apply_override(cfg, item)
    given = {item.split("=", 1)[0].strip() for item in overrides}
    if "model.img_size" in given and "token_labels.size" not in given and cfg.token_labels.size is not None:
        cfg.token_labels.size = cfg.model.img_size // 16  # the recipe's grid follows a new size (e.g. a fine-tune)
    return cfg.validate()


def config_from_dict(raw: dict, source: str = "config") -> RunConfig:
    """Build a `RunConfig` from nested plain dicts, checking every key and type."""
    unknown = set(raw) - set(SECTIONS) - {"recipe"}
    if unknown:
        raise VoloError(f"{source}: unknown section(s) {sorted(unknown)}; valid sections: {', '.join(SECTIONS)}.")
    kwargs = {}
    for name, cls in SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise VoloError(f"{source}: section {name!r} must be a mapping of keys to values.")
        kwargs[name] = _build_section(cls, section, name, source)
    return RunConfig(**kwargs, recipe=str(raw.get("recipe", "custom")))


def _build_section(cls: type, values: dict, section: str, source: str):
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    out = {}
    for key, value in values.items():
        if key not in hints:
            raise VoloError(f"{source}: unknown key {section}.{key}; valid keys of {section}: {', '.join(valid)}.")
        out[key] = _coerce(value, hints[key], f"{section}.{key}", source)
    return cls(**out)


def apply_override(cfg: RunConfig, item: str) -> None:
    """Apply one `section.key=value` override in place (value parsed as YAML, then type-checked)."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise VoloError(f"--set {item!r} is not of the form section.key=value (e.g. optim.lr_base=1e-3).")
    dotted, text = item.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    if section not in SECTIONS:
        raise VoloError(f"--set {item!r}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}.")
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    if key not in hints:
        valid = ", ".join(f.name for f in fields(cls))
        raise VoloError(f"--set {item!r}: unknown key {section}.{key}; valid keys of {section}: {valid}.")
    try:
        value = yaml.safe_load(text) if text.strip() else ""  # `key=` is the empty string; `key=null` is None
    except yaml.YAMLError:
        value = text
    setattr(getattr(cfg, section), key, _coerce(value, hints[key], dotted, "--set"))


def _coerce(value, hint, key: str, source: str):
    """Check `value` against the annotation `hint` (int accepted for float; str for a str field)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, source)
            except VoloError:
                continue
        raise VoloError(f"{source}: {key} must be {_type_name(hint)}, got {value!r}.")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise VoloError(f"{source}: {key} must be a list of {_type_name(args[0])}, got {value!r}.")
        return [_coerce(v, args[0], key, source) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise VoloError(f"{source}: {key} must be {_type_name(hint)}, got {value!r}.")


def _type_name(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}.get(
        hint, str(hint)
    )


# -- saving -------------------------------------------------------------------------------------------------
def save_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (section order as in the schema)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def is_complete(raw: dict) -> list[str]:
    """Keys of the schema missing from a raw recipe dict (a complete recipe lists them all)."""
    missing = []
    for name, cls in SECTIONS.items():
        section = raw.get(name) or {}
        missing += [f"{name}.{f.name}" for f in fields(cls) if f.name not in section]
    return missing
