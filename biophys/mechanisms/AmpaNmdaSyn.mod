COMMENT
Excitatory synapse with co-localised AMPA and NMDA conductances (Beniaguev et al. 2021),
each a double exponential normalised to a peak of its gmax for one event of weight 1
(closed-form peak time, see DoubleExpSyn.mod). The NMDA conductance is scaled by the
Mg2+ block 1 / (1 + exp(-0.08 v) [Mg] / 3.57), [Mg] in mM. One reversal potential e.

Release: as DoubleExpSyn.mod (p_release, per-instance Random123 stream `release_rng`,
no draw at p_release >= 1); AMPA and NMDA are released together.
ENDCOMMENT

NEURON {
    POINT_PROCESS AmpaNmdaSyn
    RANGE tau_r_AMPA, tau_d_AMPA, tau_r_NMDA, tau_d_NMDA
    RANGE gmax_AMPA, gmax_NMDA, e, mg, p_release
    RANGE g_AMPA, g_NMDA, i_AMPA, i_NMDA, mgblock, g, i
    NONSPECIFIC_CURRENT i
    RANDOM release_rng
    THREADSAFE
}

UNITS {
    (nA) = (nanoamp)
    (mV) = (millivolt)
    (uS) = (microsiemens)
    (mM) = (milli/liter)
}

PARAMETER {
    tau_r_AMPA = 0.3 (ms) <1e-9, 1e9>
    tau_d_AMPA = 3 (ms) <1e-9, 1e9>
    tau_r_NMDA = 2 (ms) <1e-9, 1e9>
    tau_d_NMDA = 70 (ms) <1e-9, 1e9>
    gmax_AMPA = 0.0004 (uS)
    gmax_NMDA = 0.0004 (uS)
    e = 0 (mV)
    mg = 1 (mM)
    p_release = 1 <0, 1>
}

ASSIGNED {
    v (mV)
    i (nA)
    i_AMPA (nA)
    i_NMDA (nA)
    g (uS)
    g_AMPA (uS)
    g_NMDA (uS)
    mgblock
    factor_AMPA
    factor_NMDA
}

STATE { A_AMPA B_AMPA A_NMDA B_NMDA }

INITIAL {
    A_AMPA = 0
    B_AMPA = 0
    A_NMDA = 0
    B_NMDA = 0
    factor_AMPA = peak_factor(tau_r_AMPA, tau_d_AMPA)
    factor_NMDA = peak_factor(tau_r_NMDA, tau_d_NMDA)
}

BREAKPOINT {
    SOLVE states METHOD cnexp
    UNITSOFF
    mgblock = 1/(1 + exp(-0.08*v)*mg/3.57)
    UNITSON
    g_AMPA = gmax_AMPA*(B_AMPA - A_AMPA)
    g_NMDA = gmax_NMDA*(B_NMDA - A_NMDA)*mgblock
    g = g_AMPA + g_NMDA
    i_AMPA = g_AMPA*(v - e)
    i_NMDA = g_NMDA*(v - e)
    i = i_AMPA + i_NMDA
}

DERIVATIVE states {
    A_AMPA' = -A_AMPA/tau_r_AMPA
    B_AMPA' = -B_AMPA/tau_d_AMPA
    A_NMDA' = -A_NMDA/tau_r_NMDA
    B_NMDA' = -B_NMDA/tau_d_NMDA
}

FUNCTION peak_factor(tau_r (ms), tau_d (ms)) {
    LOCAL tp
    tp = (tau_r*tau_d)/(tau_d - tau_r)*log(tau_d/tau_r)
    peak_factor = 1/(exp(-tp/tau_d) - exp(-tp/tau_r))
}

NET_RECEIVE (weight) {
    if (p_release >= 1 || random_uniform(release_rng) < p_release) {
        A_AMPA = A_AMPA + weight*factor_AMPA
        B_AMPA = B_AMPA + weight*factor_AMPA
        A_NMDA = A_NMDA + weight*factor_NMDA
        B_NMDA = B_NMDA + weight*factor_NMDA
    }
}
