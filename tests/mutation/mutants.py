"""The one-line bugs of the mutation run (tests/mutation/run.py) and the fast tests that must catch each.

`old` must occur exactly once in `file` (else the mutant is reported 'stale': update it after a refactor).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


STEP = ("tests/test_training_step.py",)
STEP_GOLDEN = ("tests/test_training_step.py", "tests/test_golden_losses.py")  # bugs that show from step 2
LOOP = ("tests/test_golden_losses.py",)  # the loss curve shows every change to what the loop computes
LOOP_EMA = ("tests/test_trainer_loop.py",)  # the EMA leaves the losses alone
RESUME = ("tests/test_resume.py::test_killed_run_resumes_with_identical_losses",)
EMA = ("tests/test_training_step.py::test_one_ema_update_is_decay_times_ema_plus_rest_times_weights",)
OPTIM = ("tests/test_optim.py", "tests/test_training_step.py")
SCHED = ("tests/test_schedule.py",)
MIX = ("tests/test_mixtoken.py", "tests/test_training_step.py")
LOSS = ("tests/test_loss.py", "tests/test_training_step.py")
MODEL = ("tests/test_model_semantics.py", "tests/test_mixtoken.py")
DEPTH = ("tests/test_models.py::test_stochastic_depth_reference_rule_and_outlooker_option",)
EVAL = ("tests/test_eval_topk.py", "tests/test_eval.py::test_top1_top5_exact")
SAMPLER = (
    "tests/test_resume.py::test_sampler_epoch_order_shards_and_resume",
    "tests/test_resume.py::test_sampler_resume_mid_epoch_and_new_world_size",
    "tests/test_sampler_edges.py",
)
DATA = (
    "tests/test_data_transforms.py",
    "tests/test_token_labels_alignment.py",
    "tests/test_targets.py",
    "tests/test_eval_crop_alignment.py",
)
LOADER = ("tests/test_collate.py", "tests/test_loader_backends.py")

S, T, E, O = "volo/training/step.py", "volo/training/trainer.py", "volo/training/ema.py", "volo/training/optim.py"
W = "volo/training/model_setup.py"
SC, MX, L = "volo/training/schedule.py", "volo/training/mixtoken.py", "volo/training/loss.py"
V, B, OA = "volo/models/volo.py", "volo/models/blocks.py", "volo/models/outlook_attention.py"
TR, SA, AF, TG = "volo/data/transforms.py", "volo/data/sampler.py", "volo/data/affine.py", "volo/data/targets.py"

M = Mutant
MUTANTS: list[Mutant] = [
    # -- one step ---------------------------------------------------------------------------------------------
    M(
        "step-lam-flipped",
        S,
        "sparse, loss_fn, None if box is None else lam)",
        "sparse, loss_fn, None if box is None else 1.0 - lam)",
        STEP,
    ),  # fmt: skip
    M("step-no-class-mix", S, "dense = mix_targets(dense, lam)", "dense = dense", STEP),
    M("step-box-dropped", S, "box = mix.box.to(ctx.device, non_blocking=True)", "box = None", STEP),
    M(
        "step-grid-stride-32",
        S,
        "sample_mix_box((batch.images.shape[2] // 16,",
        "sample_mix_box((batch.images.shape[2] // 32,",
        STEP,
    ),  # fmt: skip
    M("step-loss-not-averaged", S, "loss = parts.total / n", "loss = parts.total", STEP),
    M("step-log-not-averaged", S, ".float() / n", ".float()", STEP),
    M(
        "step-no-clip",
        S,
        "norm = torch.nn.utils.clip_grad_norm_(ctx.params, ctx.clip_grad, foreach=True)",
        "norm = _grad_norm(ctx.params)",
        STEP,
    ),  # fmt: skip
    M("step-bad-inverted", S, "bad = (~torch.isfinite(norm)).float()", "bad = torch.isfinite(norm).float()", STEP),
    M("step-skip-inverted", S, "elif not bad.item():", "elif bad.item():", STEP),
    M("step-found-inf-inverted", S, "ctx.optimizer.found_inf = bad", "ctx.optimizer.found_inf = 1.0 - bad", STEP),
    M("step-grads-kept", S, "ctx.optimizer.zero_grad(set_to_none=True)", "pass", STEP_GOLDEN),
    # -- the trainer ------------------------------------------------------------------------------------------
    M("trainer-lr-never-set", T, "set_lr(self.optimizer, lr)", "pass", LOOP),
    M(
        "trainer-lr-off-by-one",
        T,
        "                lr = self.schedule(prog.step)\n",
        "                lr = self.schedule(prog.step + 1)\n",
        LOOP,
    ),  # fmt: skip
    M("trainer-no-ema-update", T, "self.ema.update(self.model)", "pass", LOOP_EMA),
    M("trainer-ema-eval-live-model", T, "evaluate(self.ema.module,", "evaluate(self.model,", LOOP_EMA),
    M("trainer-no-clip", W, "clip_grad=tr.clip_grad,", "clip_grad=None,", LOOP),
    M("trainer-no-mixtoken", W, "mixtoken=tl.mixtoken,", "mixtoken=False,", LOOP),
    M("trainer-no-smoothing", W, "smoothing=tl.label_smoothing,", "smoothing=0.0,", LOOP),
    M(
        "trainer-lr-unscaled",
        T,
        "self.peak_lr = scaled_lr(cfg.optim.lr_base, self.geometry)",
        "self.peak_lr = cfg.optim.lr_base",
        LOOP,
    ),  # fmt: skip
    M(
        "trainer-ema-decay-ignored",
        T,
        "ModelEma(self.model, cfg.train.ema_decay)",
        "ModelEma(self.model, 0.5)",
        LOOP_EMA,
    ),
    M(
        "trainer-mix-rng-not-restored",
        T,
        'self.mix_rng.bit_generator.state = ckpt.rng[self.dist.rank]["mixtoken"]',
        "pass",
        RESUME,
    ),  # fmt: skip
    M("trainer-optimizer-not-restored", T, "self.optimizer.load_state_dict(ckpt.optimizer)", "pass", RESUME),
    M("trainer-progress-not-restored", T, "self.progress = ckpt.progress", "pass", RESUME),
    M("trainer-torch-rng-not-restored", T, "restore_rng(ckpt.rng[self.dist.rank])", "pass", RESUME),
    # -- EMA --------------------------------------------------------------------------------------------------
    M("ema-decay-wrong-way", E, "1.0 - self.decay)", "self.decay)", EMA),
    M("ema-buffers-not-copied", E, "torch._foreach_copy_(self._ema_buffers, list(model.buffers()))", "pass", EMA),
    M("ema-trains", E, "p.requires_grad_(False)", "p.requires_grad_(True)", EMA),
    M("ema-train-mode", E, "copy.deepcopy(model).eval()", "copy.deepcopy(model)", EMA),
    # -- optimiser --------------------------------------------------------------------------------------------
    M("optim-groups-ignored", O, "param_groups(model, cfg.weight_decay),", "model.parameters(),", OPTIM),
    M("optim-1d-decayed", O, "if param.ndim <= 1 or", "if param.ndim < 1 or", OPTIM),
    M(
        "optim-no-decay-decayed",
        O,
        '{"params": no_decay, "weight_decay": 0.0,',
        '{"params": no_decay, "weight_decay": weight_decay,',
        OPTIM,
    ),  # fmt: skip
    M("optim-set-lr-noop", O, 'group["lr"] = lr', 'group.setdefault("lr", lr)', OPTIM),
    M("optim-betas-swapped", O, "betas=(cfg.betas[0], cfg.betas[1])", "betas=(cfg.betas[1], cfg.betas[0])", OPTIM),
    M("optim-eps-ignored", O, "eps=cfg.eps,", "eps=1e-6,", OPTIM),
    # -- schedule ---------------------------------------------------------------------------------------------
    M("sched-warmup-off-by-one", SC, "* step / self.warmup_steps", "* (step + 1) / self.warmup_steps", SCHED),
    M("sched-cosine-end-strict", SC, "if step >= self.cosine_end:", "if step > self.cosine_end:", SCHED),
    M("sched-cosine-sign", SC, "(1.0 + math.cos(math.pi * progress))", "(1.0 - math.cos(math.pi * progress))", SCHED),
    M(
        "sched-warmup-in-epochs",
        SC,
        "warmup_steps=cfg.warmup_epochs * steps_per_epoch",
        "warmup_steps=cfg.warmup_epochs",
        SCHED,
    ),  # fmt: skip
    M(
        "sched-no-cooldown",
        SC,
        "total_steps=cosine_end + cfg.cooldown_epochs * steps_per_epoch",
        "total_steps=cosine_end",
        SCHED,
    ),  # fmt: skip
    # -- MixToken ---------------------------------------------------------------------------------------------
    M("mix-cut-sqrt-lam", MX, "cut = np.sqrt(1.0 - lam)", "cut = np.sqrt(lam)", MIX),
    M(
        "mix-lam-box-area",
        MX,
        "lam = 1.0 - (y2 - y1) * (x2 - x1) / (S_h * S_w)",
        "lam = (y2 - y1) * (x2 - x1) / (S_h * S_w)",
        MIX,
    ),  # fmt: skip
    M(
        "mix-class-target-1-lam",
        MX,
        "return lam * target + (1.0 - lam) * target.flip(0)",
        "return (1.0 - lam) * target + lam * target.flip(0)",
        MIX,
    ),  # fmt: skip
    M("mix-gt-not-mixed", MX, "mix_class_target(targets.ground_truth, lam))", "targets.ground_truth)", MIX),
    M(
        "mix-centre-axes-swapped",
        MX,
        "cy, cx = int(rng.integers(S_h)), int(rng.integers(S_w))",
        "cy, cx = int(rng.integers(S_w)), int(rng.integers(S_h))",
        MIX,
    ),  # fmt: skip
    # -- loss -------------------------------------------------------------------------------------------------
    M("loss-ce-mean-over-classes", L, "log_softmax(dim=-1)).sum(dim=-1).mean()", "log_softmax(dim=-1)).mean()", LOSS),
    M("loss-weights-ignored", L, "self.cls_weight * cls + self.dense_weight * tokens", "cls + tokens", LOSS),
    M("loss-gt-ratios-swapped", L, "torch.where(agree, 0.5, 0.9)", "torch.where(agree, 0.9, 0.5)", LOSS),
    M("loss-gt-option-ignored", S, "if loss_fn.ground_truth:  # per sample", "if False:  # per sample", LOSS),
    # -- the model --------------------------------------------------------------------------------------------
    M("model-no-paste", V, "x = torch.where(stem_mask, x.flip(0), x)", "x = torch.where(stem_mask, x, x)", MODEL),
    M(
        "model-no-unmix",
        V,
        "token_logits = torch.where(flat, token_logits.flip(0), token_logits)",
        "token_logits = token_logits",
        MODEL,
    ),  # fmt: skip
    M(
        "model-eval-no-half",
        V,
        "return cls_logits + 0.5 * token_logits.amax(dim=1)",
        "return cls_logits + token_logits.amax(dim=1)",
        MODEL,
    ),  # fmt: skip
    M(
        "model-no-pos-embed",
        V,
        "x = self.pos_drop(x + resize_pos_embed(self.pos_embed, (x.shape[1], x.shape[2])))\n"
        "        for stage in self.network[2:]:",
        "x = self.pos_drop(x)\n        for stage in self.network[2:]:",
        MODEL,
    ),
    M(
        "model-aux-head-on-cls",
        V,
        "return self.head(x[:, 0]), self.aux_head(x[:, 1:])",
        "return self.head(x[:, 0]), self.aux_head(x[:, :-1])",
        MODEL,
    ),  # fmt: skip
    M(
        "model-box-end-inclusive",
        V,
        "inside_y = (ys >= box[0]) & (ys < box[2])",
        "inside_y = (ys >= box[0]) & (ys <= box[2])",
        MODEL,
    ),  # fmt: skip
    M(
        "model-no-final-norm",
        V,
        "        return self.norm(x)\n\n    def forward_head_tokens",
        "        return x\n\n    def forward_head_tokens",
        MODEL,
    ),  # fmt: skip
    M("model-depth-rule", V, "g / max(total - 1, 1)", "g / max(total, 1)", DEPTH),
    M("drop-path-no-rescale", B, "return x * mask / keep", "return x * mask", MODEL),
    M("drop-path-at-eval", B, "if self.p == 0.0 or not self.training:", "if self.p == 0.0:", MODEL),
    M(
        "block-mlp-norm1",
        B,
        "return x + self.drop_path(self.mlp(self.norm2(x)))",
        "return x + self.drop_path(self.mlp(self.norm1(x)))",
        MODEL,
    ),  # fmt: skip
    M("block-gelu-tanh", B, "self.act = nn.GELU()", 'self.act = nn.GELU(approximate="tanh")', MODEL),
    M(
        "attention-unscaled",
        B,
        "x = F.scaled_dot_product_attention(q, k, v,",
        "x = F.scaled_dot_product_attention(q, k, v, scale=1.0,",
        MODEL,
    ),  # fmt: skip
    M("class-attn-query-token1", B, "q = self.q(x_bnc[:, :1])", "q = self.q(x_bnc[:, 1:2])", MODEL),
    M("class-block-no-residual", B, "cls = cls + self.mlp(self.norm2(cls))", "cls = self.mlp(self.norm2(cls))", MODEL),
    M(
        "outlook-scale-inverted",
        B,
        "self.scale = (dim // num_heads) ** -0.5",
        "self.scale = (dim // num_heads) ** 0.5",
        MODEL,
    ),  # fmt: skip
    M("outlook-ref-no-scale", OA, "attn = (attn * scale).softmax(dim=-1)", "attn = attn.softmax(dim=-1)", MODEL),
    M(
        "outlook-ref-softmax-axis",
        OA,
        "attn = (attn * scale).softmax(dim=-1)",
        "attn = (attn * scale).softmax(dim=-2)",
        MODEL,
    ),  # fmt: skip
    # -- evaluation -------------------------------------------------------------------------------------------
    M(
        "eval-top1-counts-top2",
        "volo/training/evaluate.py",
        "totals[0] += hit[:, 0].sum()",
        "totals[0] += hit[:, :2].any(dim=1).sum()",
        EVAL,
    ),  # fmt: skip
    M("eval-top6", "volo/training/evaluate.py", "k = min(5, logits.shape[1])", "k = min(6, logits.shape[1])", EVAL),
    # -- loaders ----------------------------------------------------------------------------------------------
    M(
        "sampler-same-order-every-epoch",
        SA,
        "manual_seed(self.seed * 1_000_003 + epoch)",
        "manual_seed(self.seed * 1_000_003)",
        SAMPLER,
    ),  # fmt: skip
    M("sampler-resume-from-start", SA, "[self.consumed : self.consumed + usable]", "[0:usable]", SAMPLER),
    M("sampler-every-rank-rank0", SA, "blocks[:, self.rank]", "blocks[:, 0]", SAMPLER),
    M(
        "sampler-no-truncation",
        SA,
        "return (self.num_samples // self.global_batch) * self.global_batch",
        "return self.num_samples",
        SAMPLER,
    ),  # fmt: skip
    M("transform-flip-not-in-labels", TR, "matrix = matrix @ affine.hflip()", "matrix = matrix", DATA),
    M("transform-flip-prob-inverted", TR, "if random.random() < cfg.hflip:", "if random.random() > cfg.hflip:", DATA),
    M(
        "transform-eval-no-resize-margin",
        TR,
        "self.scale_size = math.floor(img_size / crop_pct)",
        "self.scale_size = img_size",
        DATA,
    ),  # fmt: skip
    M("transform-centre-floor", TR, "return int(round((length - crop) / 2.0))", "return (length - crop) // 2", DATA),
    M("affine-crop-offset", AF, "(left + right) / W - 1.0", "(left + right) / W", DATA),
    M(
        "targets-smoothing-off-not-per-class",
        TG,
        "off = smoothing / num_classes\n    tokens",
        "off = smoothing\n    tokens",
        DATA,
    ),  # fmt: skip
    M(
        "collate-first-image-only",
        "volo/data/loader.py",
        "images=torch.stack([s.image for s in samples]),",
        "images=torch.stack([samples[0].image for s in samples]),",
        LOADER,
    ),  # fmt: skip
]
