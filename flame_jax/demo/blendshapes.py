"""The demo head's identity and expression blend shapes (finite differences of the generator)."""

from __future__ import annotations

import numpy as np
import scipy.linalg.lapack

from flame_jax.demo.mesh import _generate
from flame_jax.demo.params import DEMO_NUM_EXPRESSION, _smoothstep


# =============================================================================
# Identity blend shapes: finite differences of the generator for named
# proportions plus smooth random fields, reduced by PCA (orthogonal components in
# decreasing variance; a unit coefficient is one standard deviation).
# =============================================================================

# (parameter, standard deviation in metres)
_IDENTITY_SPECS = (
    ("w_cranium", 0.0035),
    ("w_temple", 0.0030),
    ("w_cheek", 0.0030),
    ("w_jaw", 0.0040),
    ("w_neck", 0.0030),
    ("z_back", 0.0060),
    ("head_top", 0.0060),
    ("z_pole", 0.0050),
    ("z_face", 0.0030),
    ("z_center", 0.0030),
    ("chin_r", 0.0020),
    ("throat_r", 0.0020),
    ("z_neck_front", 0.0040),
    ("z_neck_back", 0.0040),
    ("eye_x", 0.0013),
    ("eye_y", 0.0020),
    ("eye_z", 0.0015),
    ("eye_r", 0.0002),
    ("canth_in", 0.0007),
    ("canth_out", 0.0007),
    ("canth_out_dy", 0.0010),
    ("lid_up_h", 0.0008),
    ("lid_lo_h", 0.0006),
    ("socket", 0.0020),
    ("brow_dy", 0.0020),
    ("brow_prom", 0.0015),
    ("nasion_y", 0.0020),
    ("nose_tip_y", 0.0030),
    ("nose_tip_h", 0.0025),
    ("nose_w", 0.0015),
    ("nose_bridge_w", 0.0008),
    ("subnasale_y", 0.0018),
    ("mouth_y", 0.0020),
    ("mouth_w", 0.0022),
    ("lip_up_h", 0.0012),
    ("lip_lo_h", 0.0014),
    ("lip_proj", 0.0012),
    ("chin_proj", 0.0025),
    ("chin_y", 0.0030),
    ("cheekbone", 0.0020),
    ("ear_y", 0.0010),
    ("ear_z", 0.0010),
    ("ear_h", 0.0012),
    ("ear_out", 0.0020),
)
_N_RANDOM_IDENTITY = 75
_SCALE_STD = 0.03  # relative head size, 1 sigma


def _param_difference(P, delta):
    """Central difference of the generator: (G(P + delta) - G(P - delta)) / 2."""
    plus = dict(P)
    minus = dict(P)
    for k, d in delta.items():
        plus[k] += d
        minus[k] -= d
    return 0.5 * (_generate(plus) - _generate(minus))


def _eye_rigid_weights(v, P, topo):
    """Per eye: (eyeball indices, weight of each skin vertex to move with that eyeball)."""
    out = []
    skin = v[: topo.num_grid]
    for sgn, eye in ((1.0, topo.eye_left), (-1.0, topo.eye_right)):
        c = np.array([sgn * P["eye_x"], P["eye_y"], P["eye_z"]])
        out.append((eye, np.exp(-((np.linalg.norm(skin - c, axis=1) / 0.018) ** 4))))
    return out


def _eye_rigid(field, rigid):
    """Makes a smooth displacement field move each eyeball rigidly, and the lids with it."""
    out = field.copy()
    n = len(rigid[0][1])
    for eye, a in rigid:
        dc = field[eye].mean(0)
        out[eye] = dc
        out[:n] = out[:n] * (1 - a[:, None]) + dc * a[:, None]
    return out


def _random_fields(v, P, topo, n, seed, amp0, decay, sigma_range, sym_every, face_bias):
    """Smooth random displacement fields (sums of Gaussian blobs), eyeballs rigid."""
    rng = np.random.default_rng(seed)
    skin = v[: topo.num_grid]
    prob = 1.0 + face_bias * _smoothstep(-0.02, 0.04, skin[:, 2])
    prob /= prob.sum()
    mirror = np.array([-1.0, 1.0, 1.0])
    rigid = _eye_rigid_weights(v, P, topo)
    out = []
    for m in range(n):
        field = np.zeros_like(v)
        for _ in range(int(rng.integers(1, 4))):
            c = skin[rng.choice(len(skin), p=prob)]
            sig = rng.uniform(*sigma_range)
            a = rng.normal(size=3)
            a /= np.linalg.norm(a)
            field += a * np.exp(-0.5 * np.sum((v - c) ** 2, 1) / sig**2)[:, None]
            if m % sym_every == 0:  # symmetric pair
                field += a * mirror * np.exp(-0.5 * np.sum((v - c * mirror) ** 2, 1) / sig**2)[:, None]
        field = _eye_rigid(field, rigid)
        field *= amp0 * decay**m / np.abs(field).max()
        out.append(field)
    return out


def _identity_basis(P, v, topo, n_out):
    fields = []
    centre = np.array([0.0, 0.0, -0.03])
    fields.append(_SCALE_STD * (v - centre))
    for key, std in _IDENTITY_SPECS:
        fields.append(_param_difference(P, {key: std}))
    fields += _random_fields(v, P, topo, _N_RANDOM_IDENTITY, 7, 0.0016, 0.985, (0.018, 0.05), 3, 4.0)
    m = np.stack([f.reshape(-1) for f in fields], 0)  # (K, 3V)
    # PCA via the small Gram matrix (K x K): components = V^T M, ordered by eigenvalue. (einsum and
    # LAPACK's unblocked dsyev rather than BLAS-3 paths: multi-threaded OpenBLAS can be ~100x
    # slower on small, CPU-quota-limited machines.)
    evals, evecs, info = scipy.linalg.lapack.dsyev(np.einsum("ki,li->kl", m, m))
    if info != 0:
        raise RuntimeError(f"dsyev failed ({info})")
    order = np.argsort(evals)[::-1][:n_out]
    comps = np.einsum("kl,ki->li", evecs[:, order], m)  # (n_out, 3V)
    # Deterministic signs: positive against a fixed generic (seeded) direction. (Not "largest entry
    # positive": symmetric components have ties between mirrored vertices.)
    probe = np.random.default_rng(12345).normal(size=comps.shape[1])
    comps *= np.where(np.einsum("ki,i->k", comps, probe) >= 0, 1.0, -1.0)[:, None]
    comps = np.ascontiguousarray(comps.T)
    return comps.reshape(-1, 3, n_out)


# =============================================================================
# Expression blend shapes: named, semantic, roughly in decreasing magnitude;
# then small smooth detail fields on the face.
# =============================================================================

_EXPRESSION_SPECS = (
    ("lips_apart", {"lip_up_raise": 0.0025, "lip_lo_drop": 0.0065}),
    ("blink", {"open_l": -1.0, "open_r": -1.0, "raise_lo_l": 0.1, "raise_lo_r": 0.1}),
    ("smile", {"corner_dy_l": 0.0045, "corner_dy_r": 0.0045, "mouth_w": 0.004, "cheek_l": 0.003, "cheek_r": 0.003,
               "raise_lo_l": 0.12, "raise_lo_r": 0.12, "lip_proj": -0.0008}),
    ("pucker", {"mouth_w": -0.0055, "lip_proj": 0.004, "mouth_gap": 0.0008}),
    ("brow_raise", {"brow_raise_l": 0.005, "brow_raise_r": 0.005}),
    ("mouth_stretch", {"mouth_w": 0.005, "lip_proj": -0.0012, "lip_lo_drop": 0.001}),
    ("upper_lip_raise", {"lip_up_raise": 0.004, "nose_wrinkle": 0.001}),
    ("lower_lip_down", {"lip_lo_drop": 0.004}),
    ("blink_asym", None),
    ("brow_lower", {"brow_frown": 0.004, "brow_raise_l": -0.001, "brow_raise_r": -0.001}),
    ("mouth_corners_down", {"corner_dy_l": -0.003, "corner_dy_r": -0.003, "lip_lo_drop": 0.0005}),
    ("mouth_left", {"mouth_dx": 0.0035}),
    ("smile_asym", {"corner_dy_l": 0.003, "corner_dy_r": -0.003, "cheek_l": 0.002, "cheek_r": -0.002}),
    ("cheek_puff", {"cheek_l": 0.0045, "cheek_r": 0.0045, "lip_proj": 0.001}),
    ("lip_funnel", {"lip_proj": 0.003, "mouth_w": -0.002, "mouth_gap": 0.003}),
    ("brow_raise_asym", {"brow_raise_l": 0.004, "brow_raise_r": -0.004}),
    ("eyes_wide", {"open_l": 0.3, "open_r": 0.3, "brow_raise_l": 0.001, "brow_raise_r": 0.001}),
    ("squint", {"raise_lo_l": 0.5, "raise_lo_r": 0.5, "open_l": -0.15, "open_r": -0.15, "cheek_l": 0.002, "cheek_r": 0.002}),
    ("brow_inner_raise", {"brow_inner": 0.0035}),
    ("lip_press", {"lip_up_h": -0.0015, "lip_lo_h": -0.002, "lip_proj": -0.0015, "lip_roll": 0.001}),
    ("chin_raise", {"chin_proj": 0.0025, "chin_y": 0.002, "lip_proj": 0.0012, "lip_lo_h": -0.001}),
    ("nose_wrinkle", {"nose_wrinkle": 0.0025, "lip_up_raise": 0.001}),
    ("cheek_suck", {"cheek_l": -0.003, "cheek_r": -0.003}),
    ("lips_roll_in", {"lip_roll": 0.0015, "lip_proj": -0.0015}),
    ("dimple", {"dimple": 0.0015}),
)
_N_NAMED_EXPRESSION = len(_EXPRESSION_SPECS)

#: Names of the demo model's expression components, in order (the last ones are
#: small unnamed smooth details). ``blink`` at +1 closes both eyes.
DEMO_EXPRESSION_NAMES = tuple(n for n, _ in _EXPRESSION_SPECS) + tuple(
    f"detail_{i:02d}" for i in range(DEMO_NUM_EXPRESSION - _N_NAMED_EXPRESSION)
)


def _expression_basis(P, v, topo, n_out):
    fields = []
    for name, delta in _EXPRESSION_SPECS:
        if name == "blink_asym":  # (close left - close right) / 2
            lft = dict(P, open_l=P["open_l"] - 1.0)
            rgt = dict(P, open_r=P["open_r"] - 1.0)
            fields.append(0.5 * (_generate(lft) - _generate(rgt)))
        else:
            # One-sided difference: the expression starts from the neutral face.
            moved = dict(P)
            for k, d in delta.items():
                moved[k] += d
            fields.append(_generate(moved) - v)
    n_detail = n_out - len(fields)
    if n_detail > 0:
        det = _random_fields(v, P, topo, n_detail, 11, 0.0009, 0.96, (0.008, 0.016), 2, 12.0)
        fields += det
    out = np.stack(fields[:n_out], -1)
    out[topo.eye_left] = 0.0
    out[topo.eye_right] = 0.0
    return out


