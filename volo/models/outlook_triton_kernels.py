"""The three Triton kernels of fused outlook attention (the math and launch logic: `volo.models.outlook_triton`).

- `outlook_fwd_kernel`: per output pixel, gather the <= ceil(K/s)^2 windows covering it; each softmax row is an
  online softmax over its K*K logits, so every logit is loaded once; writes the output and (only when a backward
  will need it, `WRITE_LSE`) each row's log-sum-exp.
- `outlook_bwd_logits_kernel`: per window, `dP[a, b] = dO[a] . V[b]`, `dL = scale * P * (dP - sum_b P * dP)`
  with `P` recomputed from the logits and the saved log-sum-exp. The K*K window positions are split into a
  power-of-two tile (8 of 9 for K=3) and a tail handled column by column, so no lane works on padding.
Programs: axis 0 = batch * heads (limit 2^31 - 1), axis 1 = pixel or window blocks (limit 65,535).
- `outlook_bwd_v_kernel`: per input pixel, a gather again: `dV[pix] = sum_w sum_a P[a, b] dO[a]`.
All accumulate in fp32. With `TRITON_INTERPRET=1` (set before importing triton) they run on CPU tensors.
"""

import triton
import triton.language as tl


@triton.jit
def outlook_fwd_kernel(
    v_ptr,
    logits_ptr,
    out_ptr,
    lse_ptr,
    H,
    W,
    h,
    w,
    NH,
    scale,
    C: tl.constexpr,
    D: tl.constexpr,
    K: tl.constexpr,
    PAD: tl.constexpr,
    S: tl.constexpr,
    PY: tl.constexpr,
    PX: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
    WRITE_LSE: tl.constexpr,
):
    """One program: BLOCK_P pixels of parity class (PY, PX), one (batch, head); writes out (and the rows' lse)."""
    KK: tl.constexpr = K * K
    pid_bn = tl.program_id(0)
    pid_p = tl.program_id(1)
    b = pid_bn // NH
    n = pid_bn % NH
    ws = (W - PX + S - 1) // S  # pixels of this parity class per row
    hs = (H - PY + S - 1) // S
    q = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    yy = q // ws
    xx = q % ws
    pix_ok = q < hs * ws
    y = PY + S * yy
    x = PX + S * xx
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    v_base = v_ptr + b.to(tl.int64) * H * W * C + n * D
    l_base = logits_ptr + b.to(tl.int64) * h * w * NH * KK * KK + n * KK * KK
    lse_base = lse_ptr + b.to(tl.int64) * h * w * NH * KK + n * KK
    acc = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32)
    for ky in tl.static_range(K):
        if (PY + PAD - ky) % S == 0:
            i = yy + (PY + PAD - ky) // S
            for kx in tl.static_range(K):
                if (PX + PAD - kx) % S == 0:
                    j = xx + (PX + PAD - kx) // S
                    ok = pix_ok & (i >= 0) & (i < h) & (j >= 0) & (j < w)
                    win = tl.where(ok, i * w + j, 0).to(tl.int64)
                    row = l_base + win * (NH * KK * KK) + (ky * K + kx) * KK
                    # online softmax over the row: running max m, running sum l, window output o
                    m = tl.full([BLOCK_P], float("-inf"), tl.float32)
                    l_sum = tl.zeros([BLOCK_P], dtype=tl.float32)
                    o = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32)
                    for bb in tl.static_range(KK):
                        vy = i * S - PAD + bb // K
                        vx = j * S - PAD + bb % K
                        v_ok = ok & (vy >= 0) & (vy < H) & (vx >= 0) & (vx < W)
                        lb = tl.load(row + bb, mask=ok, other=0.0).to(tl.float32) * scale
                        m_new = tl.maximum(m, lb)
                        alpha = tl.exp(m - m_new)
                        p = tl.exp(lb - m_new)
                        l_sum = l_sum * alpha + p
                        src = tl.where(v_ok, vy * W + vx, 0).to(tl.int64) * C
                        vv = tl.load(v_base + src[:, None] + d[None, :], mask=v_ok[:, None] & d_ok[None, :], other=0.0)
                        o = o * alpha[:, None] + p[:, None] * vv.to(tl.float32)
                        m = m_new
                    acc += tl.where(ok[:, None], o / l_sum[:, None], 0.0)
                    if WRITE_LSE:
                        tl.store(lse_base + win * (NH * KK) + ky * K + kx, m + tl.log(l_sum), mask=ok)
    dst = tl.where(pix_ok, y * W + x, 0).to(tl.int64) * C
    out_base = out_ptr + b.to(tl.int64) * H * W * C + n * D
    tl.store(
        out_base + dst[:, None] + d[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=pix_ok[:, None] & d_ok[None, :],
    )


@triton.jit
def _tail_column(
    v_ptr, pix_base, l_ptr, lse, g, i, j, t, win_ok, q_ok, d, d_ok, H, W, scale,
    C: tl.constexpr, K: tl.constexpr, PAD: tl.constexpr, S: tl.constexpr,
):  # fmt: skip
    """Window position t >= KK_MAIN of `outlook_bwd_logits_kernel`, one column for BLOCK_W windows: its
    probability P[a, t] (0 where the query pixel is outside the image) and dP[a, t] = V[t] . grad[a]."""
    ty = i * S - PAD + t // K
    tx = j * S - PAD + t % K
    t_ok = win_ok & (ty >= 0) & (ty < H) & (tx >= 0) & (tx < W)
    t_src = tl.where(t_ok, ty * W + tx, 0).to(tl.int64) * C
    vt = tl.load(v_ptr + pix_base + t_src[:, None] + d[None, :], mask=t_ok[:, None] & d_ok[None, :], other=0.0)
    lt = tl.load(l_ptr, mask=q_ok, other=0.0)
    pt = tl.where(q_ok, tl.exp(lt.to(tl.float32) * scale - lse), 0.0)
    return pt, tl.sum(vt.to(tl.float32) * g, 1)


@triton.jit
def outlook_bwd_logits_kernel(
    grad_ptr,
    v_ptr,
    logits_ptr,
    lse_ptr,
    dlogits_ptr,
    H,
    W,
    h,
    w,
    NH,
    scale,
    C: tl.constexpr,
    D: tl.constexpr,
    K: tl.constexpr,
    PAD: tl.constexpr,
    S: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_D: tl.constexpr,
    KK_MAIN: tl.constexpr,
):
    """One program: BLOCK_W windows, one (batch, head); writes all K^4 logit gradients of each window.

    Window positions b < KK_MAIN (a power of two <= K*K) form a (BLOCK_W, KK_MAIN, BLOCK_D) tile of V held in
    registers; the tail b >= KK_MAIN (1 for K=3) is done one column at a time, twice per row (once for the row's
    `sum_b P * dP`, once for its gradient), so nothing is padded."""
    KK: tl.constexpr = K * K
    pid_bn = tl.program_id(0)
    pid_w = tl.program_id(1)
    b = pid_bn // NH
    n = pid_bn % NH
    win = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    win_ok = win < h * w
    i = win // w
    j = win % w
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    cols = tl.arange(0, KK_MAIN)
    pix_base = b.to(tl.int64) * H * W * C + n * D
    win64 = tl.where(win_ok, win, 0).to(tl.int64)
    l_rows = logits_ptr + b.to(tl.int64) * h * w * NH * KK * KK + n * KK * KK + win64 * (NH * KK * KK)
    dl_rows = dlogits_ptr + b.to(tl.int64) * h * w * NH * KK * KK + n * KK * KK + win64 * (NH * KK * KK)
    lse_rows = lse_ptr + b.to(tl.int64) * h * w * NH * KK + n * KK + win64 * (NH * KK)
    # the window's values V[b], b < KK_MAIN, as a (BLOCK_W, KK_MAIN, BLOCK_D) tile, zero outside the image
    vy = i[:, None] * S - PAD + cols[None, :] // K
    vx = j[:, None] * S - PAD + cols[None, :] % K
    v_ok = win_ok[:, None] & (vy >= 0) & (vy < H) & (vx >= 0) & (vx < W)
    src = tl.where(v_ok, vy * W + vx, 0).to(tl.int64) * C
    v_tile = tl.load(
        v_ptr + pix_base + src[:, :, None] + d[None, None, :],
        mask=v_ok[:, :, None] & d_ok[None, None, :],
        other=0.0,
    ).to(tl.float32)
    for a in tl.static_range(KK):
        qy = i * S - PAD + a // K
        qx = j * S - PAD + a % K
        q_ok = win_ok & (qy >= 0) & (qy < H) & (qx >= 0) & (qx < W)
        dst = tl.where(q_ok, qy * W + qx, 0).to(tl.int64) * C
        g = tl.load(grad_ptr + pix_base + dst[:, None] + d[None, :], mask=q_ok[:, None] & d_ok[None, :], other=0.0)
        g = g.to(tl.float32)
        dp = tl.sum(v_tile * g[:, None, :], 2)  # (BLOCK_W, KK_MAIN)
        lg = tl.load(l_rows[:, None] + a * KK + cols[None, :], mask=q_ok[:, None], other=0.0)
        lse = tl.load(lse_rows + a, mask=q_ok, other=0.0)
        p = tl.where(q_ok[:, None], tl.exp(lg.to(tl.float32) * scale - lse[:, None]), 0.0)
        delta = tl.sum(p * dp, 1)
        for t in tl.static_range(KK_MAIN, KK):  # tail columns: their share of delta
            pt, dpt = _tail_column(
                v_ptr, pix_base, l_rows + a * KK + t, lse, g, i, j, t, win_ok, q_ok, d, d_ok, H, W, scale, C, K, PAD, S
            )
            delta += pt * dpt
        dl = scale * p * (dp - delta[:, None])
        tl.store(dl_rows[:, None] + a * KK + cols[None, :], dl.to(dlogits_ptr.dtype.element_ty), mask=win_ok[:, None])
        for t in tl.static_range(KK_MAIN, KK):  # tail columns: their gradients
            pt, dpt = _tail_column(
                v_ptr, pix_base, l_rows + a * KK + t, lse, g, i, j, t, win_ok, q_ok, d, d_ok, H, W, scale, C, K, PAD, S
            )
            dlt = scale * pt * (dpt - delta)
            tl.store(dl_rows + a * KK + t, dlt.to(dlogits_ptr.dtype.element_ty), mask=win_ok)


@triton.jit
def outlook_bwd_v_kernel(
    grad_ptr,
    logits_ptr,
    lse_ptr,
    dv_ptr,
    H,
    W,
    h,
    w,
    NH,
    scale,
    C: tl.constexpr,
    D: tl.constexpr,
    K: tl.constexpr,
    PAD: tl.constexpr,
    S: tl.constexpr,
    PY: tl.constexpr,
    PX: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One program: BLOCK_P pixels of parity class (PY, PX), one (batch, head); gathers dV from covering windows."""
    KK: tl.constexpr = K * K
    pid_bn = tl.program_id(0)
    pid_p = tl.program_id(1)
    b = pid_bn // NH
    n = pid_bn % NH
    ws = (W - PX + S - 1) // S
    hs = (H - PY + S - 1) // S
    q = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    yy = q // ws
    xx = q % ws
    pix_ok = q < hs * ws
    y = PY + S * yy
    x = PX + S * xx
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    pix_base = b.to(tl.int64) * H * W * C + n * D
    l_base = logits_ptr + b.to(tl.int64) * h * w * NH * KK * KK + n * KK * KK
    lse_base = lse_ptr + b.to(tl.int64) * h * w * NH * KK + n * KK
    acc = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float32)
    for ky in tl.static_range(K):
        if (PY + PAD - ky) % S == 0:
            i = yy + (PY + PAD - ky) // S
            for kx in tl.static_range(K):
                if (PX + PAD - kx) % S == 0:
                    j = xx + (PX + PAD - kx) // S
                    ok = pix_ok & (i >= 0) & (i < h) & (j >= 0) & (j < w)
                    win = tl.where(ok, i * w + j, 0).to(tl.int64)
                    for a in tl.static_range(KK):
                        qy = i * S - PAD + a // K
                        qx = j * S - PAD + a % K
                        q_ok = ok & (qy >= 0) & (qy < H) & (qx >= 0) & (qx < W)
                        lab = tl.load(l_base + win * (NH * KK * KK) + a * KK + ky * K + kx, mask=q_ok, other=0.0)
                        lse = tl.load(lse_base + win * (NH * KK) + a, mask=q_ok, other=0.0)
                        p = tl.where(q_ok, tl.exp(lab.to(tl.float32) * scale - lse), 0.0)
                        src = tl.where(q_ok, qy * W + qx, 0).to(tl.int64) * C
                        g = tl.load(
                            grad_ptr + pix_base + src[:, None] + d[None, :],
                            mask=q_ok[:, None] & d_ok[None, :],
                            other=0.0,
                        )
                        acc += p[:, None] * g.to(tl.float32)
    dst = tl.where(pix_ok, y * W + x, 0).to(tl.int64) * C
    tl.store(
        dv_ptr + pix_base + dst[:, None] + d[None, :],
        acc.to(dv_ptr.dtype.element_ty),
        mask=pix_ok[:, None] & d_ok[None, :],
    )
