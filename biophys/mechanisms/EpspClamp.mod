COMMENT
EPSP-shaped current injection (Hay et al. 2011, BAC firing protocol): from `onset` on,
a double exponential with rise tau_r and decay tau_d, normalised so that its peak is
exactly imax (closed-form peak time, as in DoubleExpSyn.mod). An electrode current:
positive imax depolarises.
ENDCOMMENT

NEURON {
    POINT_PROCESS EpspClamp
    RANGE onset, tau_r, tau_d, imax, i
    ELECTRODE_CURRENT i
    THREADSAFE
}

UNITS {
    (nA) = (nanoamp)
}

PARAMETER {
    onset = 1e9 (ms)
    tau_r = 0.5 (ms) <1e-9, 1e9>
    tau_d = 5 (ms) <1e-9, 1e9>
    imax = 0 (nA)
}

ASSIGNED {
    i (nA)
    factor
}

INITIAL {
    LOCAL tp
    tp = (tau_r*tau_d)/(tau_d - tau_r)*log(tau_d/tau_r)
    factor = 1/(exp(-tp/tau_d) - exp(-tp/tau_r))
    i = 0
}

BREAKPOINT {
    if (t < onset) {
        i = 0
    } else {
        i = imax*factor*(exp(-(t - onset)/tau_d) - exp(-(t - onset)/tau_r))
    }
}
