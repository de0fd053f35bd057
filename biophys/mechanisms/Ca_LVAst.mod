COMMENT
Low-voltage-activated (T-type) Ca2+ current (Hay et al. 2011; Avery & Johnston 1996),
written from the equations in docs/l5pc-model.md. Gating m^2 h; kinetics shifted by
+10 mV (vs = v + 10); time constants divided by qt.
ENDCOMMENT

NEURON {
    SUFFIX Ca_LVAst
    USEION ca READ eca WRITE ica
    RANGE gCa_LVAstbar, gCa_LVAst, mInf, mTau, hInf, hTau
    THREADSAFE
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gCa_LVAstbar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    eca (mV)
    ica (mA/cm2)
    gCa_LVAst (S/cm2)
    mInf
    mTau (ms)
    hInf
    hTau (ms)
}

STATE { m h }

BREAKPOINT {
    SOLVE states METHOD cnexp
    gCa_LVAst = gCa_LVAstbar*m*m*h
    ica = gCa_LVAst*(v - eca)
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
    mInf = 1/(1 + exp(-(vs + 30)/6))
    mTau = (5 + 20/(1 + exp((vs + 25)/5)))/qt
    hInf = 1/(1 + exp((vs + 80)/6.4))
    hTau = (20 + 50/(1 + exp((vs + 40)/7)))/qt
    UNITSON
}
