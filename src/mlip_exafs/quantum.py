"""Quantum nuclei: the harmonic quantum correction of classical MSRDs, and the bead-count rule of PIMD.

Classical MD has no zero-point motion: its σ² → 0 as T → 0, where a measured σ²
keeps ħ/(2μω) per mode. Three kinds of nuclei (``md.nuclei``):

``classical``
    plain MD (the md stage as it always was).
``corrected``
    classical MD + the harmonic quantum correction computed here. Each pair of
    a shell is followed in time; the power spectrum of its length fluctuation
    δr(t) splits the classical σ² into frequency components σ²_cl(ω), and each is
    scaled by the ratio of the quantum to the classical harmonic MSRD,
    ``x·coth(x)``, x = ħω/(2kT):

        σ²_q = σ²_cl + Σ_ω σ²_cl(ω)·(x coth x − 1)

    The correction Δσ² = σ²_q − σ²_cl is exact for a harmonic crystal, whatever
    its spectrum (tested on an Einstein crystal against the analytic value).
    The static part of σ² (ω = 0: the spread of the pairs' mean lengths) is left
    classical. T in x is the temperature the MD realized (mean kinetic
    temperature of the frames): σ²_cl(ω) ∝ T_realized, so the zero-point term
    comes out as ħ/(2μω) whatever the thermostat noise of a short run.
    A Langevin run (the default for ``corrected``: its local friction
    equilibrates every mode, where Bussi's global rescaling does not) broadens
    each line; the spectrum (tapered against leakage) is unfolded into
    undamped modes before the weighting (:func:`undamped_modes`).
    Where it stops being valid: the correction treats each frequency as an
    independent harmonic mode. In a strongly anharmonic crystal (soft modes,
    double wells, diffusion, large thermal expansion) the classical spectrum is
    not the quantum one and the zero-point motion itself samples the
    anharmonicity; use ``path-integral`` there. It also needs frames close
    enough in time to resolve the fastest bond vibration (the spectrum is
    refused when it has not decayed before the Nyquist frequency).
``path-integral``
    PIMD through i-PI (:mod:`mlip_exafs.pimd`); every bead of every frame is a
    configuration, so σ² and χ(k) need no correction.

χ(k) of a ``corrected`` run gets, per path, the extra Debye–Waller factor
exp(−2k²Δσ²) of a shell (:class:`PathCorrections`): a single-scattering path its scatterer's shell nearest in
length, a multiple-scattering path the shell nearest its half length.

Bead count: a ring polymer of P beads gives a harmonic oscillator of frequency
ω the position variance (1/βm) Σ_k 1/(ω² + (2P/βħ)² sin²(πk/P)) instead of the
exact ħ/(2mω) coth(βħω/2). The rule takes the smallest P for which the stiffest
mode of the crystal (ω_max) is within ``BEAD_TOLERANCE`` of the exact value;
softer modes converge faster. That is P ≈ 2.5 ħω_max/(kT).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import units
from ase.data import atomic_masses, atomic_numbers
from scipy.optimize import minimize_scalar, nnls
from scipy.signal.windows import dpss

from mlip_exafs.errors import UserError, setting
from mlip_exafs.geometry import find_shells, pair_lengths_a, read_frames
from mlip_exafs.md import read_result

NUCLEI = ("classical", "corrected", "path-integral")
BEAD_TOLERANCE = 0.02  # relative error of <x²> of the stiffest harmonic mode
MAX_BEADS = 256
FRAME_MARGIN = 1.25  # frames at most 1/(2·f_max·margin) apart: the fastest vibration a little below the Nyquist frequency
NYQUIST_TAIL = 0.8  # the top 20 % of the resolved band ...
NYQUIST_TAIL_MAX_WEIGHT = 0.02  # ... may hold at most this fraction of the fluctuation spectrum
HBAR_EV_FS = units._hbar / units._e * 1e15  # ħ in eV·fs


def x_coth_x(x: np.ndarray) -> np.ndarray:
    """x·coth(x), 1 at x = 0: the quantum/classical ratio of a harmonic mode's MSRD at x = ħω/(2kT)."""
    x = np.asarray(x, dtype=float)
    small = np.abs(x) < 1e-6
    safe = np.where(small, 1.0, x)
    return np.where(small, 1.0 + x * x / 3.0, safe / np.tanh(safe))


def harmonic_sigma2_a2(omega_rad_per_fs: float, reduced_mass_amu: float, temperature_k: float, quantum: bool = True) -> float:
    """MSRD of a harmonic bond: ħ/(2μω)·coth(ħω/2kT) (quantum) or kT/(μω²) (classical), in Å²."""
    omega = omega_rad_per_fs / units.fs  # rad per ASE time unit (Å·√(amu/eV) ≈ 10.18 fs)
    kt = units.kB * temperature_k
    classical = kt / (reduced_mass_amu * omega**2)
    if not quantum:
        return float(classical)
    return float(classical * x_coth_x(HBAR_EV_FS * omega_rad_per_fs / (2.0 * kt)))


# ---------------------------------------------------------------- beads


def ring_polymer_over_classical(beads: int, u: np.ndarray) -> np.ndarray:
    """<x²> of a P-bead ring polymer over the classical kT/(mω²), harmonic oscillators with u = ħω/(kT).

    Σ_k 1/(1 + (2P/u)² sin²(πk/P)): 1 for one bead, (u/2)·coth(u/2) = x coth x for P → ∞.
    """
    u = np.maximum(np.asarray(u, dtype=float), 1e-12)
    sines = np.sin(np.pi * np.arange(beads) / beads) ** 2
    return (1.0 / (1.0 + (2.0 * beads / u[..., None]) ** 2 * sines)).sum(axis=-1)


def harmonic_bead_ratio(beads: int, u: float) -> float:
    """<x²> of a P-bead ring polymer over the exact quantum <x²>, harmonic oscillator with u = ħω/(kT)."""
    return float(ring_polymer_over_classical(beads, np.array(u)) / (0.5 * u / np.tanh(0.5 * u)))


def bead_count(omega_max_rad_per_fs: float, temperature_k: float, tolerance: float = BEAD_TOLERANCE) -> int:
    """Fewest beads that give the stiffest harmonic mode's <x²> within ``tolerance`` (≈ 2.5 ħω_max/kT at 2 %)."""
    u = HBAR_EV_FS * omega_max_rad_per_fs / (units.kB * temperature_k)
    for beads in range(1, MAX_BEADS + 1):
        if harmonic_bead_ratio(beads, u) >= 1.0 - tolerance:
            return beads
    raise UserError(
        f"more than {MAX_BEADS} beads are needed at {temperature_k:g} K (ħω_max/kT = {u:.0f}); raise the temperature or give {setting('beads')} explicitly"
    )


# ---------------------------------------------------------------- the correction


@dataclass(frozen=True)
class ShellCorrection:
    """Δσ² of one shell and what it was computed from."""

    delta_sigma2_a2: float
    dynamic_sigma2_a2: float  # classical σ² of the pairs' length fluctuations about their own means
    mean_frequency_thz: float  # σ²-weighted mean frequency of the fluctuation spectrum
    nyquist_thz: float


def shell_correction(lengths_a: np.ndarray, times_fs: np.ndarray, temperature_k: float, label: str = "shell",
                     friction_per_fs: float | None = None, beads: int | None = None) -> ShellCorrection:
    """Δσ² = Σ_ω σ²_cl(ω)(x coth x − 1) from (n_frames, n_pairs) pair lengths at evenly spaced times.

    The spectrum is multitapered (:func:`fluctuation_spectrum`) and unfolded into modes (:func:`undamped_modes`),
    so that neither the taper's nor the thermostat's broadening moves weight to where x coth x − 1 is large.
    ``friction_per_fs``: the Langevin friction γ of the run (None: lines as sharp as the run resolves, as
    under Bussi). Friction broadens every mode's line (mostly towards low frequencies), and x coth x of the
    broadened line is too small (it misses ≈ 1.8 % of the correction at γ/ω = 0.05 and 11–15 % at
    γ/ω = 0.35–0.5 when ħω/kT = 10–20, W at 10 K); ``mean_frequency_thz`` is the unfolded modes'.
    ``beads``: the σ² a P-bead ring polymer would have instead of the exact quantum one (to check the
    correction against a path-integral run with fewer beads than the rule, mode by mode).
    """
    dt_fs = frame_interval_fs(times_fs)
    freq_per_fs, spectrum = fluctuation_spectrum(lengths_a)
    freq_per_fs = freq_per_fs / dt_fs
    dynamic = float(spectrum.sum())
    nyquist = 0.5 / dt_fs
    if dynamic > 0 and spectrum[freq_per_fs > NYQUIST_TAIL * nyquist].sum() > NYQUIST_TAIL_MAX_WEIGHT * dynamic:
        raise UserError(
            f"{label}: the bond-length spectrum has not decayed at the Nyquist frequency of frames {dt_fs:g} fs apart "
            f"({1000 * nyquist:.1f} THz), so the quantum correction cannot be computed; rerun md with a shorter snapshot interval ({setting('snapshot_every_fs')}, e.g. {max(dt_fs / 4, 1):g} fs)"
        )
    if dynamic > 0:
        freq_per_fs, spectrum = undamped_modes(freq_per_fs, spectrum, len(lengths_a), friction_per_fs or 0.0)
    x = HBAR_EV_FS * 2.0 * np.pi * freq_per_fs / (2.0 * units.kB * temperature_k)
    quantum_over_classical = x_coth_x(x) if beads is None else ring_polymer_over_classical(beads, 2.0 * x)
    delta = float((spectrum * (quantum_over_classical - 1.0)).sum())
    mean_thz = float((spectrum * freq_per_fs).sum() / dynamic * 1000.0) if dynamic > 0 else 0.0
    return ShellCorrection(delta, dynamic, mean_thz, 1000.0 * nyquist)


TAPER_NW = 3.0  # time-bandwidth product of the Slepian tapers: lines 2·3/T wide, 2·NW − 1 = 5 tapers


def tapers(n_frames: int) -> np.ndarray:
    """The Slepian (DPSS) tapers of the multitaper spectrum, one per row, each of unit energy.

    An untapered periodogram leaks a line's weight as 1/f² to every frequency, and x coth x − 1 grows
    as f² there: a short run's leakage inflated Δσ² (a 2 THz mode at 100 K: +93 / +36 / +17 % with
    0.6 / 2 / 4 ps, frames 8 fs apart). One Hann taper cures the leakage but weights the run's middle,
    which made Δσ² of a mixed spectrum scatter ±10 % between seeds at 4 ps; five orthogonal tapers use
    the whole run (±3 %). docs/md.md has the measurements.
    """
    return np.atleast_2d(dpss(n_frames, TAPER_NW, Kmax=int(2 * TAPER_NW) - 1, norm=2))


def one_sided(power: np.ndarray, n_frames: int) -> np.ndarray:
    """rfft power → one-sided spectrum: every bin but 0 (and n/2 for even n) stands for ±f."""
    weight = np.full(power.shape[0], 2.0)
    weight[0] = 1.0
    if n_frames % 2 == 0:
        weight[-1] = 1.0
    return weight.reshape((-1,) + (1,) * (power.ndim - 1)) * power


def fluctuation_spectrum(lengths_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequency in cycles per frame, σ²_cl per frequency bin) of the pairs' length fluctuations about their own means.

    Multitapered (:func:`tapers`), then scaled so that the bins add up to the measured dynamic σ² averaged over
    the pairs (a static average): the spectrum only says how that σ² is distributed over frequency.
    """
    dr = lengths_a - lengths_a.mean(axis=0)
    n = dr.shape[0]
    power = sum(one_sided(np.abs(np.fft.rfft(taper[:, None] * dr, axis=0)) ** 2, n).sum(axis=1) for taper in tapers(n))
    dynamic = float((dr**2).mean())
    total = power.sum()
    return np.fft.rfftfreq(n), power * (dynamic / total) if total > 0 else power


MODE_GRID = 240  # mode frequencies tried when a spectrum is unfolded


def mode_autocorrelation(lag_fs: np.ndarray, mode_freq_per_fs: np.ndarray, friction_per_fs: float) -> np.ndarray:
    """<q(0)q(t)>/<q²> of harmonic modes (undamped frequency Ω) under Langevin friction γ; cos Ωt at γ = 0.

    e^(−γt/2)[cosh zt + (γ/2z) sinh zt], z = √(γ²/4 − Ω²) (imaginary when underdamped), written as
    two exponentials whose real parts never grow, so long lags and strong friction neither overflow nor
    lose the decay.
    """
    g = friction_per_fs
    z = np.sqrt(g * g / 4.0 - (2.0 * np.pi * np.asarray(mode_freq_per_fs, dtype=complex)) ** 2)[None, :]
    z = np.where(np.abs(z) < 1e-9, 1e-9, z)  # critical damping: the limit, to ~1e-10
    t = np.abs(np.asarray(lag_fs, dtype=float))[:, None]
    return ((0.5 + g / (4.0 * z)) * np.exp((z - g / 2.0) * t) + (0.5 - g / (4.0 * z)) * np.exp((-z - g / 2.0) * t)).real


def mode_lines(n_frames: int, dt_fs: float, mode_freq_per_fs: np.ndarray, friction_per_fs: float) -> np.ndarray:
    """Expected tapered one-sided spectrum (n_frames//2 + 1 bins) of unit-variance Langevin modes, one column each.

    E|Σ_t w_t q_t e^(−2πikt/n)|² = Σ_τ a(τ) c(τ) e^(−2πikτ/n), with a the tapers' autocorrelation (summed
    over the tapers) and c the mode's (:func:`mode_autocorrelation`): the line as the run's frames see it — damped, tapered and
    aliased, nothing left out.
    """
    lags = np.arange(n_frames)
    a = np.fft.irfft((np.abs(np.fft.rfft(tapers(n_frames), 2 * n_frames, axis=1)) ** 2).sum(axis=0))[:n_frames]
    g = a[:, None] * mode_autocorrelation(lags * dt_fs, mode_freq_per_fs, friction_per_fs)
    folded = g.copy()
    folded[1:] += g[:0:-1]  # lag −τ lands on n − τ: the DFT at k/n is periodic in the lag
    return one_sided(np.fft.rfft(folded, axis=0).real, n_frames)


def undamped_modes(freq_per_fs: np.ndarray, spectrum: np.ndarray, n_frames: int, friction_per_fs: float) -> tuple[np.ndarray, np.ndarray]:
    """σ² per *undamped* mode frequency, from the tapered spectrum of a run with Langevin friction γ (0: none).

    Under a friction γ on every atom (the md stage's Langevin; the same γ for all atoms) the normal
    modes of a harmonic crystal stay independent, and each one's line is :func:`mode_lines`. The
    spectrum is a non-negative sum of such lines: non-negative least squares on a grid of mode
    frequencies below the Nyquist frequency unfolds it (at γ = 0 it only undoes the taper). The mode
    weights are then scaled to the measured dynamic σ² (a static average, exact whatever the friction),
    so only the frequency distribution comes from the fit.
    """
    df = freq_per_fs[1] - freq_per_fs[0]
    observed = freq_per_fs > 0
    grid = np.linspace(df, freq_per_fs[-1], min(MODE_GRID, int(observed.sum())))
    lines = np.clip(mode_lines(n_frames, 1.0 / (n_frames * df), grid, friction_per_fs)[observed], 0.0, None)
    lines /= lines.sum(axis=0, keepdims=True)  # each mode's σ² inside the resolved band
    weights, _ = nnls(lines, spectrum[observed], maxiter=50 * len(grid))
    total = weights.sum()
    return (grid, weights * spectrum.sum() / total) if total > 0 else (freq_per_fs, spectrum)


def frame_interval_fs(times_fs: np.ndarray) -> float:
    """The common spacing of the frames; the spectrum needs evenly spaced, time-ordered frames."""
    times = np.asarray(times_fs, dtype=float)
    if len(times) < 8:
        raise UserError(f"only {len(times)} frames: the quantum correction needs a time series of ≥ 8 evenly spaced frames; run a longer md production")
    steps = np.diff(times)
    if not np.isfinite(steps).all() or steps.min() <= 0 or (steps.max() - steps.min()) > 1e-6 * max(1.0, steps.max()):
        raise UserError("the frames are not evenly spaced in time (info 'time_fs'); the quantum correction needs one uninterrupted md production run")
    return float(steps.mean())


def realized_temperature_k(frames, fallback_k: float | None) -> float:
    """Mean kinetic temperature written with the frames (info 'temperature_k'), else the target."""
    values = [f.info.get("temperature_k") for f in frames]
    if all(isinstance(v, (int, float)) for v in values) and values:
        return float(np.mean(values))
    if fallback_k is None:
        raise UserError("the frames carry no temperature (info 'temperature_k') and no md.json gives one; the quantum correction needs the MD temperature")
    return float(fallback_k)


@dataclass(frozen=True)
class PathCorrections:
    """Δσ² (Å²) of every absorber shell, looked up per path by half length (Å).

    A single-scattering path takes the shell of its own scatterer's element nearest in length: a pair's instantaneous
    length can lie nearer another element's shell (shells of W–W and W–S 0.1–0.3 Å apart, further out or in a
    low-symmetry crystal), whose Δσ² differs by the reduced mass (W–S's is 3× W–W's in WS2). A multiple-scattering
    path takes the shell nearest its half length of any element (its legs are shells, whose corrections are similar).
    """

    r_a: np.ndarray
    elements: tuple[str, ...]  # the neighbour element of each shell
    delta_sigma2_a2: np.ndarray

    def __call__(self, half_length_a: np.ndarray, element: str | None = None) -> np.ndarray:
        mine = np.array([element is None or e == element for e in self.elements])
        if not mine.any():  # a scatterer with no shell inside the cut (its paths lie beyond it): nearest of any
            mine[:] = True
        r, delta = self.r_a[mine], self.delta_sigma2_a2[mine]
        order = np.argsort(r)
        r, delta = r[order], delta[order]
        return delta[np.searchsorted(0.5 * (r[1:] + r[:-1]), np.asarray(half_length_a, dtype=float))]


# ---------------------------------------------------------------- which nuclei a trajectory has


def md_settings_of(traj: str | Path) -> dict:
    """The ``settings`` of the md.json beside a trajectory ({} when there is none)."""
    path = Path(traj)
    folder = path if path.is_dir() else path.parent
    try:
        return (read_result(folder) or {}).get("settings", {}) or {}
    except (OSError, ValueError, AttributeError):
        return {}


def nuclei_of(traj: str | Path) -> str:
    """'classical' (also for trajectories without md.json), 'corrected' or 'path-integral'."""
    return md_settings_of(traj).get("nuclei", "classical")


def frame_times_fs(frames) -> np.ndarray:
    times = [f.info.get("time_fs") for f in frames]
    if not all(isinstance(t, (int, float)) for t in times):
        raise UserError("the frames carry no 'time_fs'; the quantum correction needs the md stage's snapshots.extxyz")
    return np.array(times, dtype=float)


@dataclass(frozen=True)
class QuantumInput:
    """The kind of nuclei of a trajectory and, for ``corrected``, the frames' times and realized temperature."""

    nuclei: str = "classical"
    times_fs: np.ndarray | None = None
    temperature_k: float | None = None
    friction_per_fs: float | None = None  # Langevin friction of the run (None: Bussi, whose global rescaling leaves the lines sharp)


def quantum_input_of(traj: str | Path, frames) -> QuantumInput:
    nuclei = nuclei_of(traj)
    if nuclei != "corrected":
        return QuantumInput(nuclei)
    settings = md_settings_of(traj)
    return QuantumInput(nuclei, frame_times_fs(frames), realized_temperature_k(frames, settings.get("temperature_k")), langevin_friction_per_fs(settings))


def langevin_friction_per_fs(md_settings: dict) -> float | None:
    """γ = 1/τ_T of a Langevin md run (as :func:`mlip_exafs.md.make_dynamics` sets it); None for Bussi."""
    if md_settings.get("thermostat") != "langevin":
        return None
    return 1.0 / float(md_settings["thermostat_time_fs"])


def quantum_sigma2_fields(lengths_a: np.ndarray, sigma2_a2: float, quantum: QuantumInput, label: str) -> dict:
    """``sigma2`` (quantum where the nuclei allow) and ``sigma2_classical`` of one shell, plus the correction's details."""
    if quantum.nuclei == "classical":
        return {"sigma2_classical": round(sigma2_a2, 6)}
    if quantum.nuclei == "path-integral":
        return {"sigma2_classical": None}
    c = shell_correction(lengths_a, quantum.times_fs, quantum.temperature_k, label, quantum.friction_per_fs)
    return {
        "sigma2": round(sigma2_a2 + c.delta_sigma2_a2, 6),
        "sigma2_classical": round(sigma2_a2, 6),
        "delta_sigma2_quantum": round(c.delta_sigma2_a2, 6),
        "spectrum_mean_thz": round(c.mean_frequency_thz, 3),
        "correction_temperature_k": round(quantum.temperature_k, 2),
    }


EXAFS_SHELL_TOL_A = 0.1  # the analysis stage's default shell split


def exafs_correction(snapshots, absorber: str, rmax_a: float, engine: str, traj: str | Path) -> tuple[PathCorrections | None, dict]:
    """Δσ²(half path length) for the EXAFS of ``corrected`` snapshots, and what exafs.json records.

    Every absorber shell up to ``rmax_a`` gets its Δσ² (:func:`shell_correction`);
    each path takes the Δσ² of a shell (:class:`PathCorrections`). Classical and path-integral
    snapshots get no correction (the second has the zero-point motion in its beads).
    """

    nuclei = nuclei_of(traj)
    if nuclei != "corrected":
        return None, {"nuclei": nuclei}
    if engine != "fast":
        raise UserError(f"the quantum correction of χ(k) (nuclei: corrected) works with the fast engine only; set {setting('engine')} to fast")
    quantum = quantum_input_of(traj, read_frames(traj))
    shells = find_shells(snapshots.reference, absorber, rmax_a, EXAFS_SHELL_TOL_A)
    corrections = {s.label: (s.r_ideal_a, shell_correction(pair_lengths_a(s.pairs, snapshots), quantum.times_fs, quantum.temperature_k, s.label, quantum.friction_per_fs)) for s in shells}
    extra = PathCorrections(np.array([r for r, _ in corrections.values()]), tuple(s.neighbor for s in shells),
                            np.array([c.delta_sigma2_a2 for _, c in corrections.values()]))
    info = {
        "nuclei": nuclei,
        "correction_temperature_k": round(quantum.temperature_k, 2),
        "delta_sigma2_by_shell": {label: {"r_a": round(r, 4), "delta_sigma2": round(c.delta_sigma2_a2, 6)} for label, (r, c) in corrections.items()},
        "note": "χ(k) of every path damped by exp(-2k²Δσ²) of the shell nearest its half length (mlip_exafs.quantum)",
    }
    return extra, info


# ---------------------------------------------------------------- σ²(T): correlated Einstein model

_SHELL_LABEL = __import__("re").compile(r"^([A-Z][a-z]?)-([A-Z][a-z]?)\d+$")


def fit_einstein(temperatures_k, sigma2_a2, reduced_mass_amu: float, quantum: bool = True) -> dict | None:
    """θ_E (K) and static offset (Å²) of σ²(T) = σ²_static + σ²_E(T; θ_E), least squares.

    σ²_E is ħ/(2μω)·coth(ħω/2kT) (quantum σ², the measured kind) or kT/(μω²) (classical σ²,
    whose θ_E is then the harmonic frequency the classical MD sees). None without ≥ 2 finite points.
    """
    t = np.asarray(temperatures_k, dtype=float)
    s = np.asarray(sigma2_a2, dtype=float)
    keep = np.isfinite(t) & np.isfinite(s)
    t, s = t[keep], s[keep]
    if len(t) < 2 or len(set(t)) < 2:
        return None

    def model(theta_k: float) -> np.ndarray:
        omega = units.kB * theta_k / HBAR_EV_FS
        return np.array([harmonic_sigma2_a2(omega, reduced_mass_amu, ti, quantum=quantum) for ti in t])

    def residual(log_theta: float) -> float:
        m = model(np.exp(log_theta))
        return float(((s - m - (s - m).mean()) ** 2).sum())

    best = min(np.linspace(np.log(5.0), np.log(5000.0), 120), key=residual)
    fit = minimize_scalar(residual, bounds=(best - 0.1, best + 0.1), method="bounded")
    theta = float(np.exp(fit.x))
    static = float((s - model(theta)).mean())
    return {"theta_e_k": round(theta, 2), "sigma2_static": round(static, 6), "quantum": quantum, "n_temperatures": int(len(t))}


def reduced_mass_amu(element_a: str, element_b: str) -> float:
    """μ of an absorber–neighbour pair, the mass of its bond-length vibration."""
    m1, m2 = (atomic_masses[atomic_numbers[e]] for e in (element_a, element_b))
    return m1 * m2 / (m1 + m2)


def einstein_sigma2_a2(fit: dict, reduced_mass_amu: float, temperatures_k) -> np.ndarray:
    """σ²(T) of a fitted correlated-Einstein model (``fit_einstein``'s result): the curve a report draws through the points."""
    omega_rad_per_fs = units.kB * fit["theta_e_k"] / HBAR_EV_FS
    sigma2 = [harmonic_sigma2_a2(omega_rad_per_fs, reduced_mass_amu, t, quantum=fit["quantum"]) for t in temperatures_k]
    return fit["sigma2_static"] + np.array(sigma2)


def einstein_temperatures(by_temperature: dict, absorber: str, nuclei: str) -> dict:
    """θ_E per shell from a study's ``by_temperature`` msrd (quantum σ² unless the nuclei were classical), each σ² at
    the temperature its MD's production ran at (``production_temperature_k``; the target where it is not known)."""
    shells = sorted({label for entry in by_temperature.values() if entry["msrd"] for label in entry["msrd"]})
    fits = {}
    for label in shells:
        match = _SHELL_LABEL.match(label)
        if not match:
            continue
        points = [(e.get("production_temperature_k") or float(t), e["msrd"][label]["sigma2"])
                  for t, e in by_temperature.items() if e["msrd"] and label in e["msrd"]]
        fit = fit_einstein([p[0] for p in points], [p[1] for p in points], reduced_mass_amu(*match.groups()), quantum=nuclei != "classical")
        if fit:
            fits[label] = fit
    return fits


def check_frames_resolve_vibrations(atoms, snapshot_every_fs: float, potential_id: str) -> float:
    """Refuse, before any MD, frames too far apart for ``corrected``; returns the potential's f_max (THz).

    Aliasing cannot be seen in the frames themselves: a vibration above the Nyquist frequency folds to a
    low one and the spectrum still looks decayed (seen on an Einstein crystal, frames 400 fs apart). So the
    interval is held against the highest harmonic frequency of the potential at the start structure.
    """
    from mlip_exafs.pimd import highest_frequency_of  # lazy: import cycle, pimd imports quantum at its top

    f_max_per_fs = highest_frequency_of(atoms, atoms.calc, potential_id) / (2.0 * np.pi)
    every_max_fs = 1.0 / (2.0 * f_max_per_fs * FRAME_MARGIN)
    if snapshot_every_fs > every_max_fs:
        raise UserError(
            f"frames {snapshot_every_fs:g} fs apart do not resolve this potential's fastest vibration ({1000 * f_max_per_fs:.2f} THz; "
            f"Nyquist needs < {every_max_fs:.0f} fs), so the quantum correction cannot be computed; set {setting('snapshot_every_fs')} to {max(int(every_max_fs // 2), 1)} fs or shorter"
        )
    return 1000.0 * f_max_per_fs
