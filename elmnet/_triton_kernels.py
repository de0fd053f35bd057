"""Triton kernels of the ELM memory recurrence; imported only by `elmnet.fused`.

Importing this module imports triton, and `triton.jit` reads ``TRITON_INTERPRET`` when
these kernels are defined: the tests set it before the first fused call so that the same
kernels run on CPU tensors through triton's interpreter.

Layouts (all contiguous, float32): sequences are (T, N, B, ·) as in `elmnet.recurrence`;
the state sequences memory, output and high-pass have T + 1 slots, slot 0 the state
before the first step, so that step t reads slot t and writes slot t + 1 with no branch.
Feature widths are padded to powers of two ≥ 16 (what `tl.dot` wants) and masked.
"""

import triton
import triton.language as tl

ACT_IDENTITY, ACT_RELU, ACT_RELU2, ACT_SILU = 0, 1, 2, 3


@triton.jit
def _tanh(x):
    # tanh through the sigmoid: exact at ±∞, absolute error ~1e-7 near 0.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _act(a, ACT: tl.constexpr):
    if ACT == 1:
        a = tl.maximum(a, 0.0)
    elif ACT == 2:
        a = tl.maximum(a, 0.0)
        a = a * a
    elif ACT == 3:
        a = a * tl.sigmoid(a)
    return a


@triton.jit
def _act_slope(a, ACT: tl.constexpr):
    if ACT == 1:
        s = tl.where(a > 0.0, 1.0, 0.0)
    elif ACT == 2:
        s = 2.0 * tl.maximum(a, 0.0)
    elif ACT == 3:
        sg = tl.sigmoid(a)
        s = sg * (1.0 + a * (1.0 - sg))
    else:
        s = a * 0.0 + 1.0
    return s


@triton.jit
def _seq_offsets(t, rn, rb, rf, N, B, F):
    """Offsets and mask of the (BN, BB, BF) block of a (·, N, B, F) sequence at slot t."""
    off = ((t * N + rn[:, None, None]) * B + rb[None, :, None]) * F + rf[None, None, :]
    mask = (rn[:, None, None] < N) & (rb[None, :, None] < B) & (rf[None, None, :] < F)
    return off, mask


@triton.jit
def _weight(ptr, rn, ri, rj, N, R, C):
    """(BN, BR, BC) block of an (N, R, C) per-neuron weight, zero outside."""
    off = (rn[:, None, None] * R + ri[None, :, None]) * C + rj[None, None, :]
    mask = (rn[:, None, None] < N) & (ri[None, :, None] < R) & (rj[None, None, :] < C)
    return tl.load(ptr + off, mask=mask, other=0.0)


@triton.jit
def _weight_t(ptr, rn, ri, rj, N, R, C):
    """(BN, BC, BR) block of the transpose of an (N, R, C) per-neuron weight."""
    off = (rn[:, None, None] * R + ri[None, None, :]) * C + rj[None, :, None]
    mask = (rn[:, None, None] < N) & (ri[None, None, :] < R) & (rj[None, :, None] < C)
    return tl.load(ptr + off, mask=mask, other=0.0)


@triton.jit
def _vector(ptr, rn, rf, N, F):
    """(BN, 1, BF) block of an (N, F) per-neuron vector, for broadcasting over batch."""
    v = tl.load(ptr + rn[:, None] * F + rf[None, :], mask=(rn[:, None] < N) & (rf[None, :] < F))
    return v[:, None, :]


@triton.jit
def _cell_weights(u_ptr, w_ptr, bias_ptr, kappa_ptr, gain_ptr, rn, rm, ra, N, DM, DA):
    """What the forward cell of a block of neurons reads: u, w, bias, κ, gain."""
    u = _weight(u_ptr, rn, rm, ra, N, DM, DA)
    w = _weight(w_ptr, rn, ra, rm, N, DA, DM)
    bias = _vector(bias_ptr, rn, rm, N, DM)
    kappa, gain = _vector(kappa_ptr, rn, rm, N, DM), _vector(gain_ptr, rn, rm, N, DM)
    return u, w, bias, kappa, gain


@triton.jit
def _cell_weights_t(u_ptr, w_ptr, kappa_ptr, gain_ptr, rn, rm, ra, N, DM, DA):
    """What the reverse cell of a block of neurons reads: uᵀ, wᵀ, κ, gain."""
    u_t = _weight_t(u_ptr, rn, rm, ra, N, DM, DA)
    w_t = _weight_t(w_ptr, rn, ra, rm, N, DA, DM)
    kappa, gain = _vector(kappa_ptr, rn, rm, N, DM), _vector(gain_ptr, rn, rm, N, DM)
    return u_t, w_t, kappa, gain


@triton.jit
def _padded_rows_sum(ent_ptr, val_ptr, idx_ptr, seq_ptr, fac_ptr, rw, n_rows, rk, L, t, S,
                     rb, B, HAS_FAC: tl.constexpr):  # fmt: skip
    """(BR, BB): for each padded sparse row in `rw` (L entry ids, −1 = padding), the sum
    of value × seq[t, idx, b] over its entries, seq a (·, S, B) sequence; with HAS_FAC
    each term is also multiplied by fac at the same place (dropout of the source)."""
    emask = (rw[:, None] < n_rows) & (rk[None, :] < L)
    ent = tl.load(ent_ptr + rw[:, None] * L + rk[None, :], mask=emask, other=-1)
    valid = ent >= 0
    val = tl.load(val_ptr + ent, mask=valid, other=0.0)
    idx = tl.load(idx_ptr + ent, mask=valid, other=0)
    off = (t * S + idx[:, :, None]) * B + rb[None, None, :]
    mask = valid[:, :, None] & (rb[None, None, :] < B)
    q = tl.load(seq_ptr + off, mask=mask, other=0.0)
    if HAS_FAC:
        q *= tl.load(fac_ptr + off, mask=mask, other=0.0)
    return tl.sum(q * val[:, :, None], axis=1)


@triton.jit
def _cell(
    pre_ptr,
    mem_ptr,
    z_ptr,
    acts_ptr,
    u,
    w,
    bias,
    kappa,
    gain,
    a_extra,
    t,
    rn,
    rb,
    rm,
    ra,
    N,
    B,
    DM,
    DA,
    HIDDEN: tl.constexpr,
    ACT: tl.constexpr,
):
    """One step of a block of neurons: reads memory slot t, writes slot t + 1."""
    off_m, mask_m = _seq_offsets(t, rn, rb, rm, N, B, DM)
    off_a, mask_a = _seq_offsets(t, rn, rb, ra, N, B, DA)
    m = tl.load(mem_ptr + off_m, mask=mask_m, other=0.0)
    a = tl.load(pre_ptr + off_a, mask=mask_a, other=0.0) + a_extra
    a += tl.dot(m, u, input_precision="ieee")
    if HIDDEN:
        tl.store(acts_ptr + off_a, a, mask=mask_a)
        z = tl.dot(_act(a, ACT), w, input_precision="ieee") + bias
    else:
        z = a
    off_z, mask_z = _seq_offsets(t, rn, rb, rm, N, B, DM)
    tl.store(z_ptr + off_z, z, mask=mask_z)
    m = kappa * m + gain * _tanh(z)
    off_next, _ = _seq_offsets(t + 1, rn, rb, rm, N, B, DM)
    tl.store(mem_ptr + off_next, m, mask=mask_m)
    return m


@triton.jit
def forward_kernel(
    pre_ptr,
    mem_ptr,
    z_ptr,
    acts_ptr,
    u_ptr,
    w_ptr,
    bias_ptr,
    kappa_ptr,
    gain_ptr,
    T,
    N,
    B,
    DM,
    DA,
    HIDDEN: tl.constexpr,
    ACT: tl.constexpr,
    BN: tl.constexpr,
    BB: tl.constexpr,
    BDM: tl.constexpr,
    BDA: tl.constexpr,
):
    """Neurons without feedback: one program per (neuron block, batch tile), the time
    loop inside and the block's weights loaded once, before it."""
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rb = tl.program_id(1) * BB + tl.arange(0, BB)
    rm, ra = tl.arange(0, BDM), tl.arange(0, BDA)
    u, w, bias, kappa, gain = _cell_weights(
        u_ptr, w_ptr, bias_ptr, kappa_ptr, gain_ptr, rn, rm, ra, N, DM, DA
    )
    for t in range(T):
        _cell(
            pre_ptr,
            mem_ptr,
            z_ptr,
            acts_ptr,
            u,
            w,
            bias,
            kappa,
            gain,
            0.0,
            t,
            rn,
            rb,
            rm,
            ra,
            N,
            B,
            DM,
            DA,
            HIDDEN,
            ACT,
        )
        # The next step reads back this step's memory, possibly from other threads.
        tl.debug_barrier()


@triton.jit
def backward_kernel(
    mem_ptr,
    z_ptr,
    acts_ptr,
    u_ptr,
    w_ptr,
    kappa_ptr,
    gain_ptr,
    gmem_ptr,
    gzext_ptr,
    gz_ptr,
    gpre_ptr,
    gmt_ptr,
    carry_ptr,
    T,
    N,
    B,
    DM,
    DA,
    HIDDEN: tl.constexpr,
    ACT: tl.constexpr,
    HAS_GMEM: tl.constexpr,
    HAS_GZ: tl.constexpr,
    BN: tl.constexpr,
    BB: tl.constexpr,
    BDM: tl.constexpr,
    BDA: tl.constexpr,
):
    """Reverse-time pass of `forward_kernel`: per step, ∂L/∂m_t (total), ∂L/∂z_t and
    ∂L/∂a⁰_t; the gradient of the initial memory goes to `carry_ptr` (N, B, DM)."""
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rb = tl.program_id(1) * BB + tl.arange(0, BB)
    rm, ra = tl.arange(0, BDM), tl.arange(0, BDA)
    u_t, w_t, kappa, gain = _cell_weights_t(u_ptr, w_ptr, kappa_ptr, gain_ptr, rn, rm, ra, N,
                                            DM, DA)  # fmt: skip
    carry = tl.zeros((BN, BB, BDM), dtype=tl.float32)
    for i in range(T):
        t = T - 1 - i
        off_m, mask_m = _seq_offsets(t, rn, rb, rm, N, B, DM)
        g = carry
        if HAS_GMEM:
            g += tl.load(gmem_ptr + off_m, mask=mask_m, other=0.0)
        carry, _ = _cell_backward(
            z_ptr,
            acts_ptr,
            gzext_ptr,
            gz_ptr,
            gpre_ptr,
            gmt_ptr,
            g,
            u_t,
            w_t,
            kappa,
            gain,
            t,
            rn,
            rb,
            rm,
            ra,
            N,
            B,
            DM,
            DA,
            HIDDEN,
            ACT,
            HAS_GZ,
        )
    off0, mask0 = _seq_offsets(0, rn, rb, rm, N, B, DM)
    tl.store(carry_ptr + off0, carry, mask=mask0)


@triton.jit
def _cell_backward(
    z_ptr,
    acts_ptr,
    gzext_ptr,
    gz_ptr,
    gpre_ptr,
    gmt_ptr,
    g,
    u_t,
    w_t,
    kappa,
    gain,
    t,
    rn,
    rb,
    rm,
    ra,
    N,
    B,
    DM,
    DA,
    HIDDEN: tl.constexpr,
    ACT: tl.constexpr,
    HAS_GZ: tl.constexpr,
):
    """One reverse step from g = ∂L/∂m_t; returns (∂L/∂m_{t−1} through the cell, ∂L/∂a⁰_t)."""
    off_m, mask_m = _seq_offsets(t, rn, rb, rm, N, B, DM)
    tl.store(gmt_ptr + off_m, g, mask=mask_m)
    p = _tanh(tl.load(z_ptr + off_m, mask=mask_m, other=0.0))
    dz = g * gain * (1.0 - p * p)
    if HAS_GZ:
        dz += tl.load(gzext_ptr + off_m, mask=mask_m, other=0.0)
    tl.store(gz_ptr + off_m, dz, mask=mask_m)
    if HIDDEN:
        off_a, mask_a = _seq_offsets(t, rn, rb, ra, N, B, DA)
        a = tl.load(acts_ptr + off_a, mask=mask_a, other=0.0)
        da = tl.dot(dz, w_t, input_precision="ieee") * _act_slope(a, ACT)
        tl.store(gpre_ptr + off_a, da, mask=mask_a)
    else:
        da = dz
    return g * kappa + tl.dot(da, u_t, input_precision="ieee"), da


@triton.jit
def feedback_forward_kernel(
    pre_ptr,
    mem_ptr,
    z_ptr,
    acts_ptr,
    out_ptr,
    hp_ptr,
    u_ptr,
    w_ptr,
    bias_ptr,
    kappa_ptr,
    gain_ptr,
    wb_ptr,
    wy_ptr,
    beta_ptr,
    ent_ptr,
    val_ptr,
    col_ptr,
    drop_ptr,
    cbuf_ptr,
    kappa_r,
    T,
    N,
    B,
    DM,
    DA,
    DT,
    L,
    HIDDEN: tl.constexpr,
    ACT: tl.constexpr,
    HAS_DROP: tl.constexpr,
    BN: tl.constexpr,
    BB: tl.constexpr,
    BDM: tl.constexpr,
    BDA: tl.constexpr,
    BDT: tl.constexpr,
    BL: tl.constexpr,
    BR: tl.constexpr,
):
    """A recurrent bank: one program per batch tile holds every neuron, because each
    step reads all of the previous step's outputs. Per step: (A) branch sums
    c = S (D_t ⊙ o_{t−1}) from the padded CSR rows into `cbuf` (N·DT, B); (B) the cells,
    block by block of BN neurons, then the high-pass ReLU output."""
    rb = tl.program_id(0) * BB + tl.arange(0, BB)
    rm, ra, rj, rk = tl.arange(0, BDM), tl.arange(0, BDA), tl.arange(0, BDT), tl.arange(0, BL)
    n_rows = N * DT
    for t in range(T):
        for row0 in range(0, n_rows, BR):
            rw = row0 + tl.arange(0, BR)
            c = _padded_rows_sum(ent_ptr, val_ptr, col_ptr, out_ptr, drop_ptr, rw, n_rows, rk,
                                 L, t, N, rb, B, HAS_DROP)  # fmt: skip
            cmask = (rw[:, None] < n_rows) & (rb[None, :] < B)
            tl.store(cbuf_ptr + rw[:, None] * B + rb[None, :], c, mask=cmask)
        tl.debug_barrier()
        for n0 in range(0, N, BN):
            rn = n0 + tl.arange(0, BN)
            coff = (rn[:, None, None] * DT + rj[None, None, :]) * B + rb[None, :, None]
            cmask = (rn[:, None, None] < N) & (rj[None, None, :] < DT) & (rb[None, :, None] < B)
            c = tl.load(cbuf_ptr + coff, mask=cmask, other=0.0)
            wb = _weight(wb_ptr, rn, rj, ra, N, DT, DA)
            extra = tl.dot(c, wb, input_precision="ieee")
            u, w, bias, kappa, gain = _cell_weights(
                u_ptr, w_ptr, bias_ptr, kappa_ptr, gain_ptr, rn, rm, ra, N, DM, DA
            )
            m = _cell(
                pre_ptr,
                mem_ptr,
                z_ptr,
                acts_ptr,
                u,
                w,
                bias,
                kappa,
                gain,
                extra,
                t,
                rn,
                rb,
                rm,
                ra,
                N,
                B,
                DM,
                DA,
                HIDDEN,
                ACT,
            )
            r = tl.sum(m * _vector(wy_ptr, rn, rm, N, DM), axis=2)
            soff = (t * N + rn[:, None]) * B + rb[None, :]
            smask = (rn[:, None] < N) & (rb[None, :] < B)
            hp = tl.load(hp_ptr + soff, mask=smask, other=0.0)
            hp = hp + (1.0 - kappa_r) * (r - hp)
            beta = tl.load(beta_ptr + rn, mask=rn < N, other=0.0)
            o = tl.maximum(r - hp + beta[:, None], 0.0)
            tl.store(hp_ptr + soff + N * B, hp, mask=smask)
            tl.store(out_ptr + soff + N * B, o, mask=smask)
        tl.debug_barrier()


@triton.jit
def feedback_backward_kernel(
    mem_ptr,
    z_ptr,
    acts_ptr,
    out_ptr,
    u_ptr,
    w_ptr,
    kappa_ptr,
    gain_ptr,
    wb_ptr,
    wy_ptr,
    entt_ptr,
    valt_ptr,
    rowt_ptr,
    drop_ptr,
    gmem_ptr,
    gzext_ptr,
    gout_ptr,
    ghp_ptr,
    gz_ptr,
    gpre_ptr,
    gmt_ptr,
    gy_ptr,
    gr_ptr,
    gbr_ptr,
    go_ptr,
    carry_ptr,
    chp_ptr,
    kappa_r,
    T,
    N,
    B,
    DM,
    DA,
    DT,
    LT,
    HIDDEN: tl.constexpr,
    ACT: tl.constexpr,
    HAS_DROP: tl.constexpr,
    HAS_GMEM: tl.constexpr,
    HAS_GZ: tl.constexpr,
    HAS_GOUT: tl.constexpr,
    HAS_GHP: tl.constexpr,
    BN: tl.constexpr,
    BB: tl.constexpr,
    BDM: tl.constexpr,
    BDA: tl.constexpr,
    BDT: tl.constexpr,
    BLT: tl.constexpr,
    BJ: tl.constexpr,
):
    """Reverse-time pass of `feedback_forward_kernel`. Per step: (B) the cells block by
    block, from the output's gradient to ∂L/∂c_t (stored in `gbr`, (T, N, DT, B)); (A)
    ∂L/∂o_{t−1} = D_t ⊙ Sᵀ ∂L/∂c_t from the padded transposed rows into `go` slot t.
    The per-neuron carries (memory `carry`, high-pass `chp`) live in global memory."""
    rb = tl.program_id(0) * BB + tl.arange(0, BB)
    rm, ra, rj, rk = tl.arange(0, BDM), tl.arange(0, BDA), tl.arange(0, BDT), tl.arange(0, BLT)
    for i in range(T):
        t = T - 1 - i
        for n0 in range(0, N, BN):
            rn = n0 + tl.arange(0, BN)
            soff = (t * N + rn[:, None]) * B + rb[None, :]
            smask = (rn[:, None] < N) & (rb[None, :] < B)
            go = tl.load(go_ptr + soff + N * B, mask=smask, other=0.0)
            if HAS_GOUT:
                go += tl.load(gout_ptr + soff, mask=smask, other=0.0)
            o = tl.load(out_ptr + soff + N * B, mask=smask, other=0.0)
            dy = tl.where(o > 0.0, go, 0.0)
            coff = rn[:, None] * B + rb[None, :]
            gh = tl.load(chp_ptr + coff, mask=smask, other=0.0) - dy
            if HAS_GHP:
                gh += tl.load(ghp_ptr + soff, mask=smask, other=0.0)
            dr = dy + (1.0 - kappa_r) * gh
            tl.store(chp_ptr + coff, kappa_r * gh, mask=smask)
            tl.store(gy_ptr + soff, dy, mask=smask)
            tl.store(gr_ptr + soff, dr, mask=smask)

            off_c, mask_c = _seq_offsets(0, rn, rb, rm, N, B, DM)
            g = tl.load(carry_ptr + off_c, mask=mask_c, other=0.0)
            g += dr[:, :, None] * _vector(wy_ptr, rn, rm, N, DM)
            if HAS_GMEM:
                off_m, mask_m = _seq_offsets(t, rn, rb, rm, N, B, DM)
                g += tl.load(gmem_ptr + off_m, mask=mask_m, other=0.0)
            u_t, w_t, kappa, gain = _cell_weights_t(u_ptr, w_ptr, kappa_ptr, gain_ptr, rn, rm,
                                                    ra, N, DM, DA)  # fmt: skip
            carry, da = _cell_backward(
                z_ptr,
                acts_ptr,
                gzext_ptr,
                gz_ptr,
                gpre_ptr,
                gmt_ptr,
                g,
                u_t,
                w_t,
                kappa,
                gain,
                t,
                rn,
                rb,
                rm,
                ra,
                N,
                B,
                DM,
                DA,
                HIDDEN,
                ACT,
                HAS_GZ,
            )
            tl.store(carry_ptr + off_c, carry, mask=mask_c)
            wb_t = _weight_t(wb_ptr, rn, rj, ra, N, DT, DA)
            dc = tl.dot(da, wb_t, input_precision="ieee")
            boff = ((t * N + rn[:, None, None]) * DT + rj[None, None, :]) * B + rb[None, :, None]
            bmask = (rn[:, None, None] < N) & (rj[None, None, :] < DT) & (rb[None, :, None] < B)
            tl.store(gbr_ptr + boff, dc, mask=bmask)
        tl.debug_barrier()
        for j0 in range(0, N, BJ):
            rc = j0 + tl.arange(0, BJ)
            # The dropout factor is the source's (o_{t−1}), one per column: after the sum.
            s = _padded_rows_sum(entt_ptr, valt_ptr, rowt_ptr, gbr_ptr, gbr_ptr, rc, N, rk, LT,
                                 t, N * DT, rb, B, False)  # fmt: skip
            soff = (t * N + rc[:, None]) * B + rb[None, :]
            smask = (rc[:, None] < N) & (rb[None, :] < B)
            if HAS_DROP:
                s *= tl.load(drop_ptr + soff, mask=smask, other=0.0)
            tl.store(go_ptr + soff, s, mask=smask)
        tl.debug_barrier()
