COMMENT
Transient Na+ current of soma and dendrites (Hay et al. 2011): NaTa_t shifted by +6 mV,
written from the equations in docs/l5pc-model.md. Gating m^3 h; rates at 34 degC
through the fixed factor qt = 2.3^((34-21)/10).
ENDCOMMENT

NEURON {
    SUFFIX NaTs2_t
    USEION na READ ena WRITE ina
    RANGE gNaTs2_tbar, gNaTs2_t, mInf, mTau, hInf, hTau
    THREADSAFE
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gNaTs2_tbar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    ena (mV)
    ina (mA/cm2)
    gNaTs2_t (S/cm2)
    mInf
    mTau (ms)
    hInf
    hTau (ms)
}

STATE { m h }

BREAKPOINT {
    SOLVE states METHOD cnexp
    gNaTs2_t = gNaTs2_tbar*m*m*m*h
    ina = gNaTs2_t*(v - ena)
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
    if (u == -32) { u = u + 0.0001 }
    mAlpha = (0.182*(u + 32))/(1 - exp(-(u + 32)/6))
    mBeta = (0.124*(-u - 32))/(1 - exp(-(-u - 32)/6))
    mInf = mAlpha/(mAlpha + mBeta)
    mTau = (1/(mAlpha + mBeta))/qt

    u = vm
    if (u == -60) { u = u + 0.0001 }
    hAlpha = (-0.015*(u + 60))/(1 - exp((u + 60)/6))
    hBeta = (-0.015*(-u - 60))/(1 - exp((-u - 60)/6))
    hInf = hAlpha/(hAlpha + hBeta)
    hTau = (1/(hAlpha + hBeta))/qt
    UNITSON
}
