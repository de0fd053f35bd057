COMMENT
Intracellular Ca2+ in a submembrane shell (Hay et al. 2011; Destexhe et al. 1994),
written from the equation in docs/l5pc-model.md:
    dcai/dt = -10000 * ica * gamma / (2 F depth) - (cai - minCai) / decay
gamma is the fraction of free (unbuffered) calcium. As in the original model there is no
INITIAL block: cai starts from the ion's cai0 (5e-5 mM) and relaxes towards minCai.
ENDCOMMENT

NEURON {
    SUFFIX CaDynamics_E2
    USEION ca READ ica WRITE cai
    RANGE decay, gamma, minCai, depth
    THREADSAFE
}

UNITS {
    (mV) = (millivolt)
    (mA) = (milliamp)
    FARADAY = (faraday) (coulombs)
    (molar) = (1/liter)
    (mM) = (millimolar)
    (um) = (micron)
}

PARAMETER {
    gamma = 0.05
    decay = 80 (ms)
    depth = 0.1 (um)
    minCai = 1e-4 (mM)
}

ASSIGNED { ica (mA/cm2) }

STATE { cai (mM) }

BREAKPOINT { SOLVE states METHOD cnexp }

DERIVATIVE states {
    UNITSOFF
    cai' = -(10000)*(ica*gamma/(2*FARADAY*depth)) - (cai - minCai)/decay
    UNITSON
}
