COMMENT
Hyperpolarisation-activated cation current Ih (Hay et al. 2011; Kole et al. 2006),
written from the equations in docs/l5pc-model.md. Gating m; non-specific, reversal
ehcn = -45 mV; no temperature factor.
ENDCOMMENT

NEURON {
    SUFFIX Ih
    NONSPECIFIC_CURRENT ihcn
    RANGE gIhbar, gIh, ehcn, mInf, mTau
    THREADSAFE
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gIhbar = 0.00001 (S/cm2)
    ehcn = -45.0 (mV)
}

ASSIGNED {
    v (mV)
    ihcn (mA/cm2)
    gIh (S/cm2)
    mInf
    mTau (ms)
}

STATE { m }

BREAKPOINT {
    SOLVE states METHOD cnexp
    gIh = gIhbar*m
    ihcn = gIh*(v - ehcn)
}

DERIVATIVE states {
    rates(v)
    m' = (mInf - m)/mTau
}

INITIAL {
    rates(v)
    m = mInf
}

PROCEDURE rates(vm (mV)) {
    LOCAL u, mAlpha, mBeta
    UNITSOFF
    u = vm
    if (u == -154.9) { u = u + 0.0001 }
    mAlpha = 0.00643*(u + 154.9)/(exp((u + 154.9)/11.9) - 1)
    mBeta = 0.193*exp(vm/33.1)
    mInf = mAlpha/(mAlpha + mBeta)
    mTau = 1/(mAlpha + mBeta)
    UNITSON
}
