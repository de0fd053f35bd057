COMMENT
Transient K+ current (Hay et al. 2011; Korngreen & Sakmann 2000), written from the
equations in docs/l5pc-model.md. Gating m^4 h; kinetics shifted by +10 mV (vs = v + 10).
ENDCOMMENT

NEURON {
    SUFFIX K_Tst
    USEION k READ ek WRITE ik
    RANGE gK_Tstbar, gK_Tst, mInf, mTau, hInf, hTau
    THREADSAFE
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gK_Tstbar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    ek (mV)
    ik (mA/cm2)
    gK_Tst (S/cm2)
    mInf
    mTau (ms)
    hInf
    hTau (ms)
}

STATE { m h }

BREAKPOINT {
    SOLVE states METHOD cnexp
    gK_Tst = gK_Tstbar*m*m*m*m*h
    ik = gK_Tst*(v - ek)
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
    LOCAL qt, vs
    qt = 2.3^((34 - 21)/10)
    UNITSOFF
    vs = vm + 10
    mInf = 1/(1 + exp(-vs/19))
    mTau = (0.34 + 0.92*exp(-((vs + 71)/59)^2))/qt
    hInf = 1/(1 + exp((vs + 66)/10))
    hTau = (8 + 49*exp(-((vs + 73)/23)^2))/qt
    UNITSON
}
