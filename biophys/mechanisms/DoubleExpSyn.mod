COMMENT
Conductance synapse with a double-exponential time course, normalised so that a single
event of weight 1 gives a peak conductance of exactly gmax (closed-form peak time
tp = tau_r tau_d / (tau_d - tau_r) ln(tau_d / tau_r)). Used for AMPA-only excitation
(0.3 / 3 ms, 0.4 nS, 0 mV) and GABA_A inhibition (0.2 / 8 ms, 1 nS, -80 mV).

Each event is transmitted with probability p_release. At p_release >= 1 no random number
is drawn at all; below 1 the draw comes from this instance's Random123 stream
`release_rng`, which the simulator seeds (ids and sequence) before every run, so the
outcome is reproducible.
ENDCOMMENT

NEURON {
    POINT_PROCESS DoubleExpSyn
    RANGE tau_r, tau_d, gmax, e, p_release, g, i
    NONSPECIFIC_CURRENT i
    RANDOM release_rng
    THREADSAFE
}

UNITS {
    (nA) = (nanoamp)
    (mV) = (millivolt)
    (uS) = (microsiemens)
}

PARAMETER {
    tau_r = 0.3 (ms) <1e-9, 1e9>
    tau_d = 3 (ms) <1e-9, 1e9>
    gmax = 0.0004 (uS)
    e = 0 (mV)
    p_release = 1 <0, 1>
}

ASSIGNED {
    v (mV)
    i (nA)
    g (uS)
    factor
}

STATE { A B }

INITIAL {
    LOCAL tp
    A = 0
    B = 0
    tp = (tau_r*tau_d)/(tau_d - tau_r)*log(tau_d/tau_r)
    factor = 1/(exp(-tp/tau_d) - exp(-tp/tau_r))
}

BREAKPOINT {
    SOLVE states METHOD cnexp
    g = gmax*(B - A)
    i = g*(v - e)
}

DERIVATIVE states {
    A' = -A/tau_r
    B' = -B/tau_d
}

NET_RECEIVE (weight) {
    if (p_release >= 1 || random_uniform(release_rng) < p_release) {
        A = A + weight*factor
        B = B + weight*factor
    }
}
