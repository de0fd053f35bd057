COMMENT
Transient Na+ current of the axon (Hay et al. 2011; kinetics from Colbert & Pan 2002),
written from the equations in docs/l5pc-model.md. Gating m^3 h; rates at 34 degC
through the fixed factor qt = 2.3^((34-21)/10).
ENDCOMMENT

NEURON {
    SUFFIX NaTa_t
    USEION na READ ena WRITE ina
    RANGE gNaTa_tbar, gNaTa_t, mInf, mTau, hInf, hTau
    THREADSAFE
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gNaTa_tbar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    ena (mV)
    ina (mA/cm2)
    gNaTa_t (S/cm2)
    mInf
    mTau (ms)
    hInf
    hTau (ms)
}

STATE { m h }

BREAKPOINT {
    SOLVE states METHOD cnexp
    gNaTa_t = gNaTa_tbar*m*m*m*h
    ina = gNaTa_t*(v - ena)
}

DERIVATIVE states {
    rates(v)
    m' = (mInf - m)/mTau
    h' = (hInf - h)/hTau
}

INITIAL {
    rates(v)
    m = mInf
    h = hInf
}

PROCEDURE rates(vm (mV)) {
    LOCAL qt, u, mAlpha, mBeta, hAlpha, hBeta
    qt = 2.3^((34 - 21)/10)
    UNITSOFF
    : the rate expressions are 0/0 at their half-activation voltage: nudge by 1e-4 mV
    u = vm
    if (u == -38) { u = u + 0.0001 }
    mAlpha = (0.182*(u + 38))/(1 - exp(-(u + 38)/6))
    mBeta = (0.124*(-u - 38))/(1 - exp(-(-u - 38)/6))
    mInf = mAlpha/(mAlpha + mBeta)
    mTau = (1/(mAlpha + mBeta))/qt

    u = vm
    if (u == -66) { u = u + 0.0001 }
    hAlpha = (-0.015*(u + 66))/(1 - exp((u + 66)/6))
    hBeta = (-0.015*(-u - 66))/(1 - exp((-u - 66)/6))
    hInf = hAlpha/(hAlpha + hBeta)
    hTau = (1/(hAlpha + hBeta))/qt
    UNITSON
}
