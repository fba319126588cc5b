"""The VOLO architecture table: one `VoloArch` per variant, and the eval settings of the released weights.

Numbers from `shared/docs/volo-reference.md` section 2 (and timm's port). `volo_tiny` is ours: a few thousand
parameters' worth of the same architecture, for fast CPU tests and the built-in demo.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class VoloArch:
    """Everything that fixes a VOLO network's shapes (and so its state-dict)."""

    layers: tuple[int, int, int, int]
    """Blocks per stage: outlookers (stride 8), then three transformer stages (stride 16)."""
    embed_dims: tuple[int, int, int, int]
    """Channels per stage; stage 0 is the outlooker stage."""
    num_heads: tuple[int, int, int, int]
    """Attention heads per stage (outlookers: head_dim 32; transformers: 12 (D1) or 16 heads)."""
    mlp_ratio: float = 3.0
    """MLP hidden width as a multiple of the channels."""
    stem_hidden: int = 64
    """Width of the three-conv stem."""
    num_post_layers: int = 2
    """Class-attention blocks after the network."""
    outlook_kernel: int = 3
    outlook_stride: int = 2
    img_size: int = 224
    """Training resolution; sets the pos_embed grid (img_size / 16)."""
    num_classes: int = 1000
    in_chans: int = 3
    drop_rate: float = 0.0
    """Dropout after pos_embed and in attention/MLP projections (0 in every recipe)."""
    drop_path_rate: float = 0.0
    """Stochastic depth, linear in the global block index (see `volo.models.volo.drop_path_rates`)."""
    drop_path_outlookers: bool = False
    """The reference gives outlookers no drop-path; True applies the same linear rule to them too."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VoloArch:
        known = {f for f in cls.__dataclass_fields__}
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**fixed)

    def with_overrides(self, **overrides) -> VoloArch:
        return replace(self, **overrides)


@dataclass(frozen=True)
class EvalConfig:
    """How the released weights are evaluated (timm's pretrained_cfg)."""

    crop_pct: float = 0.96
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class Variant:
    name: str
    arch: VoloArch
    eval_cfgs: dict[int, EvalConfig] = field(default_factory=dict)
    """Eval settings per resolution of a released checkpoint."""

    def eval_cfg(self, img_size: int) -> EvalConfig:
        return self.eval_cfgs.get(img_size, default_eval_config(img_size))


def default_eval_config(img_size: int) -> EvalConfig:
    """Eval settings of a resolution no released checkpoint has: crop 0.96 up to 224 px, the whole image above."""
    return EvalConfig(crop_pct=0.96 if img_size <= 224 else 1.0)


_CROP_224 = {224: EvalConfig(0.96)}

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant(
            "volo_tiny",
            VoloArch(
                layers=(1, 1, 1, 1), embed_dims=(32, 64, 64, 64), num_heads=(1, 2, 2, 2), mlp_ratio=2.0, stem_hidden=16
            ),
            {224: EvalConfig(0.96)},
        ),
        Variant(
            "volo_d1",
            VoloArch(layers=(4, 4, 8, 2), embed_dims=(192, 384, 384, 384), num_heads=(6, 12, 12, 12)),
            {**_CROP_224, 384: EvalConfig(1.0)},
        ),
        Variant(
            "volo_d2",
            VoloArch(layers=(6, 4, 10, 4), embed_dims=(256, 512, 512, 512), num_heads=(8, 16, 16, 16)),
            {**_CROP_224, 384: EvalConfig(1.0)},
        ),
        Variant(
            "volo_d3",
            VoloArch(layers=(8, 8, 16, 4), embed_dims=(256, 512, 512, 512), num_heads=(8, 16, 16, 16)),
            {**_CROP_224, 448: EvalConfig(1.0)},
        ),
        Variant(
            "volo_d4",
            VoloArch(layers=(8, 8, 16, 4), embed_dims=(384, 768, 768, 768), num_heads=(12, 16, 16, 16)),
            {224: EvalConfig(1.15), 448: EvalConfig(1.15)},  # timm's volo_d4_224 / _448 crop_pct
        ),
        Variant(
            "volo_d5",
            VoloArch(
                layers=(12, 12, 20, 4),
                embed_dims=(384, 768, 768, 768),
                num_heads=(12, 16, 16, 16),
                mlp_ratio=4.0,
                stem_hidden=128,
            ),
            {224: EvalConfig(1.15), 448: EvalConfig(1.15), 512: EvalConfig(1.15)},  # timm's crop_pct
        ),
    ]
}


def eval_config_of(arch: VoloArch) -> EvalConfig:
    """The eval settings of a network: its variant's table at its resolution, else `default_eval_config`. The one
    source of crop_pct/interpolation/mean/std for `volo eval`, in-run evaluation, `volo predict` and
    `model.pretrained_cfg` (see `volo.models.pretrained`)."""
    name = identify_variant(arch, match_heads=False)
    return VARIANTS[name].eval_cfg(arch.img_size) if name else default_eval_config(arch.img_size)


def identify_variant(arch: VoloArch, match_heads: bool = True) -> str | None:
    """The name of the variant `arch` is (resolution and class count aside), or None. `match_heads=False` matches
    tensor shapes only: the transformer head counts leave no trace in them."""
    keys = ("layers", "embed_dims", "mlp_ratio", "stem_hidden") + (("num_heads",) if match_heads else ())
    for name, variant in VARIANTS.items():
        if all(getattr(variant.arch, k) == getattr(arch, k) for k in keys):
            return name
    return None
