COMMENT
Persistent Na+ current (Hay et al. 2011; Magistretti & Alonso 1999), written from the
equations in docs/l5pc-model.md. Gating m^3 h; activation time constant borrows the
NaTa_t rates.
ENDCOMMENT

NEURON {
    SUFFIX Nap_Et2
    USEION na READ ena WRITE ina
    RANGE gNap_Et2bar, gNap_Et2, mInf, mTau, hInf, hTau
    THREADSAFE
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gNap_Et2bar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    ena (mV)
    ina (mA/cm2)
    gNap_Et2 (S/cm2)
    mInf
    mTau (ms)
    hInf
    hTau (ms)
}

STATE { m h }

BREAKPOINT {
    SOLVE states METHOD cnexp
    gNap_Et2 = gNap_Et2bar*m*m*m*h
    ina = gNap_Et2*(v - ena)
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
    mInf = 1/(1 + exp(-(vm + 52.6)/4.6))
    u = vm
    if (u == -38) { u = u + 0.0001 }
    mAlpha = (0.182*(u + 38))/(1 - exp(-(u + 38)/6))
    mBeta = (0.124*(-u - 38))/(1 - exp(-(-u - 38)/6))
    mTau = 6*(1/(mAlpha + mBeta))/qt

    hInf = 1/(1 + exp((vm + 48.8)/10))
    u = vm
    if (u == -17) { u = u + 0.0001 }
    hAlpha = -2.88e-6*(u + 17)/(1 - exp((u + 17)/4.63))
    u = vm
    if (u == -64.4) { u = u + 0.0001 }
    hBeta = 6.94e-6*(u + 64.4)/(1 - exp(-(u + 64.4)/2.63))
    hTau = (1/(hAlpha + hBeta))/qt
    UNITSON
}
