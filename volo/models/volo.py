"""The VOLO network (Vision Outlooker), weight-for-weight compatible with the released checkpoints.

    images (B, 3, H, W) --patch_embed--> (B, H/8, W/8, C0) --outlookers--> --downsample--> (B, H/16, W/16, C)
    + pos_embed --transformers--> tokens (B, N, C) --prepend cls, 2 class blocks--> norm
    head(cls) -> class logits; aux_head(tokens) -> token logits (B, N, classes), N = (H/16) * (W/16) row-major.

`forward` returns, in eval mode, the prediction `head(cls) + 0.5 * max_tokens(aux_head(tokens))` (a tensor of
logits); in training mode a `VoloTrainOutput`. MixToken is an explicit input: a token-grid box (or mask) chosen by
the caller; tokens inside it come from the batch in reverse order (sample i takes from sample B-1-i), and the token
logits come back un-mixed, so every token's logits belong to its own image. The forward has no host
synchronisation, so `torch.compile(fullgraph=True)` compiles it once for any box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from volo.errors import VoloError
from volo.models.blocks import ClassBlock, Downsample, Outlooker, PatchEmbed, Transformer
from volo.models.features import FEATURE_LEVELS, feature_take_indices
from volo.models.pretrained import pretrained_cfg
from volo.models.variants import VoloArch


@dataclass
class VoloTrainOutput:
    """What a training forward returns."""

    cls_logits: torch.Tensor
    """(B, classes): the class head on the class token."""
    token_logits: torch.Tensor
    """(B, N, classes): the aux head on every token, un-mixed; N = (H/16)*(W/16) in row-major order."""


def drop_path_rates(arch: VoloArch) -> list[float]:
    """Per-block stochastic-depth rates over all blocks (outlookers first), as the reference assigns them.

    Block with global index g gets `drop_path_rate * g / (sum(layers) - 1)`; outlookers get 0 unless
    `drop_path_outlookers` is set.
    """
    total = sum(arch.layers)
    rates = [arch.drop_path_rate * g / max(total - 1, 1) for g in range(total)]
    if not arch.drop_path_outlookers:
        rates[: arch.layers[0]] = [0.0] * arch.layers[0]
    return rates


def box_to_mask(box: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A (4,) box [y1, x1, y2, x2) on an h x w grid as an (h, w) bool mask, with tensor ops only."""
    ys = torch.arange(h, device=box.device)
    xs = torch.arange(w, device=box.device)
    inside_y = (ys >= box[0]) & (ys < box[2])
    inside_x = (xs >= box[1]) & (xs < box[3])
    return inside_y[:, None] & inside_x[None, :]


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a (1, g, g, C) position embedding to `grid` with bicubic interpolation (as the reference)."""
    if tuple(pos_embed.shape[1:3]) == tuple(grid):
        return pos_embed
    resized = F.interpolate(pos_embed.permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class Volo(nn.Module):
    def __init__(self, arch: VoloArch):
        super().__init__()
        if arch.img_size % 16:
            raise VoloError(
                f"Image size {arch.img_size} is not a multiple of 16; VOLO needs one (224, 256, 384, 448, 512...)."
            )
        self.arch = arch
        dims, heads = arch.embed_dims, arch.num_heads
        rates = drop_path_rates(arch)
        grid = arch.img_size // 16

        self.patch_embed = PatchEmbed(arch.in_chans, arch.stem_hidden, dims[0])
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, dims[-1]))
        self.pos_drop = nn.Dropout(arch.drop_rate)
        outlookers = nn.Sequential(
            *[
                Outlooker(
                    dims[0],
                    heads[0],
                    arch.mlp_ratio,
                    arch.outlook_kernel,
                    arch.outlook_stride,
                    arch.drop_rate,
                    rates[g],
                )
                for g in range(arch.layers[0])
            ]
        )
        stages: list[nn.Module] = [outlookers, Downsample(dims[0], dims[1])]
        start = arch.layers[0]
        for i in (1, 2, 3):
            stages.append(
                nn.Sequential(
                    *[
                        Transformer(dims[i], heads[i], arch.mlp_ratio, arch.drop_rate, rates[start + j])
                        for j in range(arch.layers[i])
                    ]
                )
            )
            start += arch.layers[i]
        self.network = nn.ModuleList(stages)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims[-1]))
        self.post_network = nn.ModuleList(
            [ClassBlock(dims[-1], heads[-1], arch.mlp_ratio, arch.drop_rate) for _ in range(arch.num_post_layers)]
        )
        self.norm = nn.LayerNorm(dims[-1])
        self.head: nn.Module = nn.Linear(dims[-1], arch.num_classes) if arch.num_classes else nn.Identity()
        self.aux_head: nn.Module | None = nn.Linear(dims[-1], arch.num_classes) if arch.num_classes else None
        self.grad_checkpointing = False
        self.pretrained_cfg = pretrained_cfg(arch)
        """timm's pretrained_cfg: eval settings (input_size, crop_pct, interpolation, mean, std), num_classes and
        the released checkpoint (file, url, hf_hub_id) of this variant at this size; see `volo.models.pretrained`."""
        self.reset_parameters()

    # -- initialisation -------------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)

    # -- timm's model API ----------------------------------------------------------------------------------
    @property
    def default_cfg(self) -> dict:
        """timm's older name of `pretrained_cfg`."""
        return self.pretrained_cfg

    @property
    def num_classes(self) -> int:
        """Classes of the heads (0: no heads, `forward` returns the pooled class-token features)."""
        return self.arch.num_classes

    @property
    def num_features(self) -> int:
        """Channels of the final features (`forward_features(x)[:, 0]`, `forward_head(..., pre_logits=True)`)."""
        return self.arch.embed_dims[-1]

    head_hidden_size = num_features

    def get_classifier(self) -> nn.Module:
        """The class-token head (timm's API; the token head is `aux_head`)."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New, freshly initialised `head` and `aux_head` for `num_classes` classes (0: no heads, as in timm)."""
        if global_pool not in (None, "token"):
            raise VoloError(f"VOLO pools with its class token only; got global_pool={global_pool!r}, use 'token'.")
        dim = self.arch.embed_dims[-1]
        device = self.patch_embed.proj.weight.device
        self.head = nn.Linear(dim, num_classes, device=device) if num_classes else nn.Identity()
        self.aux_head = nn.Linear(dim, num_classes, device=device) if num_classes else None
        if num_classes:
            _init_weights(self.head)
            _init_weights(self.aux_head)
        self.arch = self.arch.with_overrides(num_classes=num_classes)
        self.pretrained_cfg = {**self.pretrained_cfg, "num_classes": num_classes}

    def no_weight_decay(self) -> set[str]:
        """Parameters timm's optimiser factory keeps out of weight decay."""
        return {"pos_embed", "cls_token"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each outlooker/transformer/class block's activations in the backward instead of keeping them
        (timm's API): training memory drops to roughly the blocks' inputs, for ~1/3 more compute. Same gradients
        (the RNG state of drop-path is replayed). The stem is not recomputed (its BatchNorm statistics would update
        twice)."""
        self.grad_checkpointing = enable

    def _run_blocks(self, blocks: nn.Sequential | nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        recompute = self.grad_checkpointing and torch.is_grad_enabled()
        for block in blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return x

    @property
    def feature_info(self) -> list[dict]:
        """The four feature levels of `forward_intermediates` / `features_only=True` (timm's list): the outlooker
        stage at stride 8, then the three transformer stages at stride 16. VOLO has no stride 4 or 32."""
        dims = self.arch.embed_dims
        return [
            {"num_chs": dims[0], "reduction": 8, "module": "network.0", "name": "outlooker"},
            *(
                {"num_chs": dims[i], "reduction": 16, "module": f"network.{i + 1}", "name": "transformer"}
                for i in (1, 2, 3)
            ),
        ]

    # -- forward --------------------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.arch.in_chans:
            raise VoloError(
                f"VOLO expects images of shape (B, {self.arch.in_chans}, H, W); got {tuple(x.shape)}. "
                "Convert greyscale/RGBA images to RGB, or create the model with in_chans to match."
            )
        if x.shape[2] % 16 or x.shape[3] % 16:
            raise VoloError(f"Image size {x.shape[2]}x{x.shape[3]} is not a multiple of 16; VOLO needs one.")

    def forward_stem(self, x_bchw: torch.Tensor, mix_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Stem to stride 8, channels-last; with `mix_mask` (token grid, h x w bool) apply MixToken."""
        self._check_input(x_bchw)
        x = self.patch_embed(x_bchw)
        if mix_mask is not None:
            stem_mask = mix_mask.repeat_interleave(2, 0).repeat_interleave(2, 1)[None, :, :, None]
            x = torch.where(stem_mask, x.flip(0), x)
        return x

    def forward_tokens(self, x_bhwc: torch.Tensor) -> torch.Tensor:
        """Stride-8 map through outlookers, downsample and transformers: (B, H/16, W/16, C)."""
        return self._forward_transformers(self._run_blocks(self.network[0], x_bhwc))

    def _forward_transformers(self, x8_bhwc: torch.Tensor) -> torch.Tensor:
        """The outlookers' stride-8 output through downsample, pos_embed and the transformer stages."""
        x = self.network[1](x8_bhwc)
        x = self.pos_drop(x + resize_pos_embed(self.pos_embed, (x.shape[1], x.shape[2])))
        for stage in self.network[2:]:
            x = self._run_blocks(stage, x)
        return x

    def forward_cls(self, tokens_bhwc: torch.Tensor) -> torch.Tensor:
        """Prepend the class token, class attention, final norm: (B, 1 + N, C)."""
        B, _, _, C = tokens_bhwc.shape
        x = torch.cat([self.cls_token.expand(B, -1, -1), tokens_bhwc.reshape(B, -1, C)], dim=1)
        x = self._run_blocks(self.post_network, x)
        return self.norm(x)

    def forward_head_tokens(self, tokens_bhwc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class attention and the two heads: (class logits (B, K), token logits (B, N, K))."""
        x = self.forward_cls(tokens_bhwc)
        return self.head(x[:, 0]), self.aux_head(x[:, 1:])

    def forward_features(self, x_bchw: torch.Tensor) -> torch.Tensor:
        """timm's `forward_features`: the normed class token and tokens, (B, 1 + N, C), N = (H/16) * (W/16)."""
        return self.forward_cls(self.forward_tokens(self.forward_stem(x_bchw)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """timm's `forward_head` on `forward_features` output: the eval logits `head(cls) + 0.5 * max_tokens(
        aux_head(tokens))`, or with `pre_logits` the class token's features (B, C)."""
        if pre_logits or self.aux_head is None:
            return self.head(x[:, 0]) if not pre_logits else x[:, 0]
        return self.head(x[:, 0]) + 0.5 * self.aux_head(x[:, 1:]).amax(dim=1)

    def forward_train(
        self, x_bchw: torch.Tensor, mix_box: torch.Tensor | None = None, mix_mask: torch.Tensor | None = None
    ) -> VoloTrainOutput:
        """Class and un-mixed token logits. MixToken by `mix_box` ((4,) [y1, x1, y2, x2), token grid) or
        `mix_mask` ((H/16, W/16) bool); neither means no mixing."""
        h, w = x_bchw.shape[2] // 16, x_bchw.shape[3] // 16
        if mix_box is not None:
            mix_mask = box_to_mask(mix_box, h, w)
        tokens = self.forward_tokens(self.forward_stem(x_bchw, mix_mask))
        cls_logits, token_logits = self.forward_head_tokens(tokens)
        if mix_mask is not None:  # un-mix: tokens inside the box came from the reversed batch
            flat = mix_mask.reshape(1, h * w, 1)
            token_logits = torch.where(flat, token_logits.flip(0), token_logits)
        return VoloTrainOutput(cls_logits, token_logits)

    def forward_eval(self, x_bchw: torch.Tensor) -> torch.Tensor:
        """The prediction: `head(cls) + 0.5 * max over tokens of aux_head(tokens)`."""
        if self.aux_head is None:  # num_classes=0: the pooled features, as timm
            return self.forward_head(self.forward_features(x_bchw))
        cls_logits, token_logits = self.forward_head_tokens(self.forward_tokens(self.forward_stem(x_bchw)))
        return cls_logits + 0.5 * token_logits.amax(dim=1)

    def forward(
        self, x_bchw: torch.Tensor, mix_box: torch.Tensor | None = None, mix_mask: torch.Tensor | None = None
    ) -> torch.Tensor | VoloTrainOutput:
        if self.training:
            return self.forward_train(x_bchw, mix_box, mix_mask)
        return self.forward_eval(x_bchw)

    def forward_feature_maps(self, x_bchw: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale NCHW features for dense heads: [stride 8 (B, C0, H/8, W/8), stride 16 (B, C, H/16, W/16)]."""
        maps = self.forward_intermediates(x_bchw, indices=[0, 3], intermediates_only=True)
        return [m.contiguous() for m in maps]

    def forward_intermediates(
        self,
        x_bchw: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API over the four levels of `feature_info`: 0 = outlookers (stride 8, C0 channels),
        1..3 = the transformer stages (stride 16, C). `indices`: None all, n the last n, a list those (negative
        from the end). `norm` applies the final norm to transformer levels. Returns the NCHW maps, or
        (`forward_features` output, maps) unless `intermediates_only`/`stop_early` ends the forward early."""
        if output_fmt != "NCHW":
            raise VoloError(f"forward_intermediates gives NCHW maps only; got output_fmt={output_fmt!r}.")
        take = feature_take_indices(FEATURE_LEVELS, indices)
        last = max(take) if (stop_early or intermediates_only) else FEATURE_LEVELS - 1
        x = self._run_blocks(self.network[0], self.forward_stem(x_bchw))
        maps = [x.permute(0, 3, 1, 2)] if 0 in take else []
        if last >= 1:
            x = self.network[1](x)
            x = self.pos_drop(x + resize_pos_embed(self.pos_embed, (x.shape[1], x.shape[2])))
            for level in range(1, last + 1):
                x = self._run_blocks(self.network[level + 1], x)
                if level in take:
                    maps.append((self.norm(x) if norm else x).permute(0, 3, 1, 2))
        if intermediates_only:
            return maps
        return (self.forward_cls(x) if last == FEATURE_LEVELS - 1 else x), maps

    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] | None = None,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop what the feature levels `indices` do not need (later stages, class attention, heads; timm's API);
        returns the absolute indices. Afterwards only `forward_intermediates(..., intermediates_only=True)` works."""
        take = feature_take_indices(FEATURE_LEVELS, indices)
        last = max(take)
        self.network = self.network[: last + 2] if last else self.network[:1]
        if last == 0:  # pos_embed and the norm act after the outlookers
            self.pos_embed = None
            prune_norm = True
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head or last < 3:
            self.post_network = nn.ModuleList()
            self.cls_token = None
            self.reset_classifier(0)
        return take


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
