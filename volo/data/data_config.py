"""timm's `resolve_data_config` and `create_transform` for VOLO models, so timm users need nothing new:

    model = volo.create_model("volo_d1", pretrained=True).eval()
    config = volo.resolve_data_config(model=model)           # input_size, interpolation, mean, std, crop_pct
    transform = volo.create_transform(**config)              # PIL image -> (3, H, W) normalised tensor
    logits = model(transform(img).unsqueeze(0))

The settings come from `model.pretrained_cfg`, which reads the same variant table (`variants.eval_config_of`) as
`volo eval`, in-run evaluation and `volo predict`; the transforms are the ones those use (`EvalTransform`,
`TrainTransform`), returning the image tensor only.
"""

from __future__ import annotations

from collections.abc import Callable

from volo.errors import VoloError

DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def resolve_data_config(
    args: dict | None = None,
    pretrained_cfg: dict | None = None,
    model=None,
    use_test_size: bool = False,
    verbose: bool = False,
) -> dict:
    """The eval data settings of `model` (or of `pretrained_cfg`), with any of `args` (timm's keys, and
    `img_size`) overriding them. `use_test_size` and `verbose` are accepted for timm compatibility."""
    if pretrained_cfg is None:
        if model is None:
            raise VoloError("resolve_data_config needs model= or pretrained_cfg= (e.g. model.pretrained_cfg).")
        pretrained_cfg = getattr(model, "pretrained_cfg", None)
        if pretrained_cfg is None:
            raise VoloError(f"{type(model).__name__} has no pretrained_cfg; create it with volo.create_model.")
    config = {k: pretrained_cfg[k] for k in DATA_KEYS if k in pretrained_cfg}
    args = dict(args or {})
    if args.get("img_size") is not None:
        size = int(args["img_size"])
        config["input_size"] = (config["input_size"][0], size, size)
    for key in DATA_KEYS:
        if args.get(key) is not None:
            config[key] = tuple(args[key]) if key in ("input_size", "mean", "std") else args[key]
    if verbose:
        print("Data processing configuration for current model + dataset:")
        for k, v in config.items():
            print(f"\t{k}: {v}")
    return config


def create_transform(
    input_size: int | tuple[int, int, int] = 224,
    is_training: bool = False,
    interpolation: str = "bicubic",
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    crop_pct: float = 0.96,
    crop_mode: str = "center",
    auto_augment: str | None = "rand-m9-mstd0.5-inc1",
    re_prob: float = 0.25,
    hflip: float = 0.5,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Callable:
    """A PIL image -> (3, H, W) float tensor transform. Eval: resize the short side to floor(size / crop_pct),
    centre crop (padded when crop_pct > 1), normalise. Training: the VOLO recipe's RandomResizedCrop, flip,
    RandAugment and random erasing (`volo train` also keeps token labels aligned; this returns the image only)."""
    from volo.data.transforms import EvalTransform, TrainTransform, TrainTransformConfig
    from volo.models.variants import IMAGENET_MEAN, IMAGENET_STD

    size = input_size[-1] if isinstance(input_size, (tuple, list)) else int(input_size)
    if isinstance(input_size, (tuple, list)) and input_size[-1] != input_size[-2]:
        raise VoloError(f"VOLO transforms are square; got input_size={tuple(input_size)}.")
    if crop_mode != "center":
        raise VoloError(f"crop_mode={crop_mode!r} is not supported; VOLO evaluates with a centre crop ('center').")
    mean, std = tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD)
    if is_training:
        cfg = TrainTransformConfig(
            img_size=size,
            scale=tuple(scale),
            ratio=tuple(ratio),
            hflip=hflip,
            auto_augment=auto_augment or None,
            re_prob=re_prob,
            mean=mean,
            std=std,
        )
        inner = TrainTransform(cfg)
    else:
        inner = EvalTransform(size, crop_pct, interpolation, mean, std)
    return ImageOnly(inner)


class ImageOnly:
    """A volo transform that returns the image tensor alone (the label affine is for token labels)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        return self.transform(img).image

    def __repr__(self) -> str:
        return f"ImageOnly({type(self.transform).__name__}({vars(self.transform)}))"
