"""Image augmentations that make synthetic face renders look more like real video frames.

Pure NumPy (OpenCV for drawing, blurring and JPEG coding) functions of one frame and, where the
face matters, its 2D landmarks in pixels. Every random choice comes from the ``rng``
(``np.random.Generator``) the caller passes, so a result is a deterministic function of the inputs
and the generator's state. Images are ``[H, W, 3]`` uint8 (0–255) or float (0–1); each function
returns the same dtype it was given.

* ``paint_occluders``: hands (a skin-coloured palm with finger-like ellipses), hair (dark strands
  or a fringe over the forehead and an eye) and glasses-like bars across the eyes, painted over the
  face; also returns the occluded-pixel mask so a loss or a metric can leave those pixels out.
* photometric: ``blur`` (Gaussian or motion), ``noise`` (Gaussian sensor noise), ``jpeg``
  (re-encoded at a random quality), ``color_jitter`` (brightness, contrast, saturation, gamma,
  white balance and a directional light gradient).
* ``random_background`` / ``composite``: a cluttered background behind a face mask.
* ``jitter_boxes``: the crop-box noise of a real landmark detector (centre shift and side scale
  relative to the box side).
* ``augment``: all of the above in one call, with probabilities and ranges from an
  ``AugmentConfig``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

# cv2 (opencv-python-headless) is a declared dependency; media/crops.py imports it lazily because
# the crop maths do not need it, here every drawing function does.
import cv2
import numpy as np

from neuface_jax.common.settings import setting

__all__ = [
    "OCCLUDER_KINDS",
    "AugmentConfig",
    "augment",
    "blur",
    "color_jitter",
    "composite",
    "face_box",
    "jitter_boxes",
    "jpeg",
    "noise",
    "paint_occluders",
    "random_background",
    "skin_color",
]

OCCLUDER_KINDS = ("hand", "hair", "bar")

#: iBUG-68 indices of the eyes (36–47) and the brows (17–26), used when 68 points are given.
_EYES68 = np.arange(36, 48)
_BROWS68 = np.arange(17, 27)


# --------------------------------------------------------------------------- dtype helpers
def _to_float(image) -> tuple[np.ndarray, bool]:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"augment: an image must be [H, W, 3], got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0, True
    return img.astype(np.float32), False


def _restore(img: np.ndarray, was_uint8: bool) -> np.ndarray:
    img = np.clip(img, 0.0, 1.0)
    return np.round(img * 255.0).astype(np.uint8) if was_uint8 else img.astype(np.float32)


def _uniform(rng: np.random.Generator, lo_hi) -> float:
    lo, hi = (float(lo_hi), float(lo_hi)) if np.isscalar(lo_hi) else (float(lo_hi[0]), float(lo_hi[1]))
    return lo if hi <= lo else float(rng.uniform(lo, hi))


# --------------------------------------------------------------------------- geometry
def face_box(landmarks2d) -> tuple[float, float, float, float]:
    """``(cx, cy, width, height)`` of the finite landmarks (pixels).

    Raises:
      ValueError: no finite landmark.
    """
    p = np.asarray(landmarks2d, np.float64).reshape(-1, np.asarray(landmarks2d).shape[-1])[:, :2]
    p = p[np.all(np.isfinite(p), axis=1)]
    if len(p) == 0:
        raise ValueError("augment: the landmarks have no finite point")
    lo, hi = p.min(0), p.max(0)
    centre = (lo + hi) / 2
    return float(centre[0]), float(centre[1]), float(max(hi[0] - lo[0], 1.0)), float(max(hi[1] - lo[1], 1.0))


def _eye_line(landmarks2d) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the two eyes (68 points) or a line at 40 % of the face box's height (any other set)."""
    p = np.asarray(landmarks2d, np.float64)[..., :2]
    if p.shape[0] == 68 and np.all(np.isfinite(p[_EYES68])):
        return p[36:42].mean(0), p[42:48].mean(0)
    cx, cy, w, h = face_box(p)
    y = cy - 0.1 * h
    return np.array([cx - 0.22 * w, y]), np.array([cx + 0.22 * w, y])


def jitter_boxes(boxes, rng: np.random.Generator, *, shift: float = 0.04, scale: float = 0.06) -> np.ndarray:
    """Crop boxes ``[..., 3]`` (``cx, cy, side``) as a noisy detector would give them.

    The centre moves by a normal of standard deviation ``shift`` × side (per axis) and the side is
    multiplied by ``exp(N(0, scale))``: a landmark detector's boxes on real video differ from
    the true landmarks' boxes by a few percent of the side, in position and size.
    """
    b = np.asarray(boxes, np.float64).copy()
    if b.shape[-1] != 3:
        raise ValueError(f"jitter_boxes: boxes must be [..., 3] (cx, cy, side), got {b.shape}")
    side = b[..., 2]
    b[..., 0] += rng.normal(size=side.shape) * shift * side
    b[..., 1] += rng.normal(size=side.shape) * shift * side
    b[..., 2] = side * np.exp(rng.normal(size=side.shape) * scale)
    return b


# --------------------------------------------------------------------------- colours
#: Skin tones (linear-ish RGB in [0, 1]) from very light to very dark; sampled between neighbours.
_SKIN_TONES = np.array([
    [0.96, 0.80, 0.70], [0.90, 0.70, 0.58], [0.80, 0.60, 0.46], [0.66, 0.46, 0.33],
    [0.50, 0.34, 0.24], [0.36, 0.24, 0.17], [0.24, 0.16, 0.12],
])
_HAIR_COLOURS = np.array([
    [0.05, 0.04, 0.04], [0.16, 0.10, 0.06], [0.32, 0.20, 0.10], [0.62, 0.48, 0.28], [0.45, 0.20, 0.08],
    [0.55, 0.55, 0.55],
])


def skin_color(rng: np.random.Generator) -> np.ndarray:
    """A random skin tone, RGB (3,) in [0, 1] (interpolated between light and dark references)."""
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    i = min(int(t), len(_SKIN_TONES) - 2)
    c = (1 - (t - i)) * _SKIN_TONES[i] + (t - i) * _SKIN_TONES[i + 1]
    return np.clip(c * rng.uniform(0.95, 1.05, size=3), 0, 1)


# --------------------------------------------------------------------------- occluders
def _ellipse(mask: np.ndarray, centre, axes, angle_deg: float) -> None:
    """Fills an ellipse into a uint8 mask (4× sub-pixel precision)."""
    c = (int(round(centre[0] * 4)), int(round(centre[1] * 4)))
    a = (max(int(round(axes[0] * 4)), 1), max(int(round(axes[1] * 4)), 1))
    cv2.ellipse(mask, c, a, float(angle_deg), 0, 360, 255, -1, lineType=cv2.LINE_AA, shift=2)


def _hand(shape, centre, size: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """A hand: palm ellipse plus 4 fingers and a thumb (ellipses), rotated at random.
    Returns (alpha [H, W] in [0, 1], shading [H, W])."""
    h, w = shape
    m = np.zeros((h, w), np.uint8)
    theta = rng.uniform(0, 2 * np.pi)  # direction the fingers point
    d = np.array([math.cos(theta), math.sin(theta)])
    n = np.array([-d[1], d[0]])
    palm_r = 0.5 * size
    _ellipse(m, centre, (palm_r * 0.95, palm_r * 0.8), math.degrees(theta))
    finger_len = size * rng.uniform(0.55, 0.8)
    spread = rng.uniform(0.0, 0.25)
    for k, off in enumerate((-0.6, -0.2, 0.2, 0.6)):
        ang = theta + spread * off
        dk = np.array([math.cos(ang), math.sin(ang)])
        length = finger_len * (0.85 if k in (0, 3) else 1.0)
        base = np.asarray(centre) + d * palm_r * 0.6 + n * off * palm_r * 0.9
        _ellipse(m, base + dk * length / 2, (length / 2, size * 0.1), math.degrees(ang))
    side = 1.0 if rng.random() < 0.5 else -1.0
    ang = theta + side * rng.uniform(0.7, 1.3)
    dk = np.array([math.cos(ang), math.sin(ang)])
    base = np.asarray(centre) + n * side * palm_r * 0.7
    _ellipse(m, base + dk * size * 0.3, (size * 0.3, size * 0.11), math.degrees(ang))
    yy, xx = np.mgrid[0:h, 0:w]
    # Lit from one side: a linear shading across the hand, darker toward its edges.
    u = ((xx - centre[0]) * n[0] + (yy - centre[1]) * n[1]) / max(size, 1.0)
    shade = 1.0 + 0.25 * np.clip(u, -1, 1) * (1 if rng.random() < 0.5 else -1)
    return m.astype(np.float32) / 255.0, shade.astype(np.float32)


def _hair(shape, landmarks2d, size: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Hair over the forehead and one eye: a fringe band plus curved strands falling from above."""
    h, w = shape
    cx, cy, fw, fh = face_box(landmarks2d)
    p = np.asarray(landmarks2d, np.float64)[..., :2]
    top = float(np.nanmin(p[_BROWS68, 1])) if p.shape[0] == 68 else cy - 0.3 * fh
    m = np.zeros((h, w), np.uint8)
    side = 1.0 if rng.random() < 0.5 else -1.0
    # The fringe: the top of the head (an arc over the brows) down to a ragged edge that sweeps
    # lower toward one side, over that eye.
    depth = size * rng.uniform(0.3, 0.9)
    xs = np.linspace(cx - 0.62 * fw, cx + 0.62 * fw, 24)
    u = (xs - cx) / (0.62 * fw)  # -1 .. 1
    sweep = np.clip(u * side, 0, 1)
    lower = top + depth * (0.25 + 0.75 * sweep) * np.sqrt(np.clip(1 - u ** 2, 0, 1)) + depth * 0.15
    lower += np.abs(rng.normal(size=xs.shape)) * 0.06 * size  # ragged tips
    upper = top - 0.15 * fh - 0.55 * fh * np.sqrt(np.clip(1 - u ** 2, 0, 1))
    poly = np.concatenate([np.stack([xs, upper], 1), np.stack([xs[::-1], lower[::-1]], 1)])
    cv2.fillPoly(m, [np.round(poly * 4).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=2)
    x0, x1 = cx - 0.6 * fw, cx + 0.6 * fw
    # Strands: quadratic curves falling from the fringe.
    for _ in range(int(rng.integers(3, 9))):
        sx = rng.uniform(x0, x1)
        length = size * rng.uniform(0.3, 1.0)
        bend = rng.normal() * 0.3 * length
        t = np.linspace(0, 1, 16)
        pts = np.stack([sx + bend * t ** 2, top + t * length], 1)
        cv2.polylines(m, [np.round(pts * 4).astype(np.int32)], False, 255,
                      thickness=max(1, int(round(size * rng.uniform(0.02, 0.06)))), lineType=cv2.LINE_AA, shift=2)
    yy, xx = np.mgrid[0:h, 0:w]
    # Strand texture: thin bright/dark streaks along the hair's falling direction.
    phase = rng.uniform(0, 2 * np.pi)
    period = max(size * rng.uniform(0.03, 0.08), 2.0)
    shade = 1.0 + 0.2 * np.sin(2 * np.pi * (xx + 0.3 * np.sin(yy / max(size * 0.3, 1.0))) / period + phase)
    return m.astype(np.float32) / 255.0, shade.astype(np.float32)


def _bar(shape, landmarks2d, size: float, rng) -> tuple[np.ndarray, np.ndarray, float]:
    """A glasses-like bar: two lens frames joined by a bridge (sometimes dark lenses, sometimes a solid
    band) along the eye line. Returns (alpha, shading, lens opacity)."""
    h, w = shape
    left, right = _eye_line(landmarks2d)
    d = right - left
    dist = max(float(np.linalg.norm(d)), 1.0)
    ang = math.degrees(math.atan2(d[1], d[0]))
    m = np.zeros((h, w), np.uint8)
    lens = (dist * rng.uniform(0.32, 0.45), dist * rng.uniform(0.2, 0.32))
    thick = max(1, int(round(dist * rng.uniform(0.04, 0.1))))
    style = rng.random()
    for c in (left, right):
        c4 = (int(round(c[0] * 4)), int(round(c[1] * 4)))
        a4 = (int(round(lens[0] * 4)), int(round(lens[1] * 4)))
        if style < 0.4:  # a solid band / sunglasses lens
            cv2.ellipse(m, c4, a4, ang, 0, 360, 255, -1, lineType=cv2.LINE_AA, shift=2)
        else:
            cv2.ellipse(m, c4, a4, ang, 0, 360, 255, thick, lineType=cv2.LINE_AA, shift=2)
    # Bridge and temples: lines from each lens outward and between them.
    u = d / dist
    pts = [left + u * lens[0], right - u * lens[0], left - u * lens[0], left - u * (lens[0] + 0.5 * dist),
           right + u * lens[0], right + u * (lens[0] + 0.5 * dist)]
    for a, b in ((0, 1), (2, 3), (4, 5)):
        cv2.line(m, tuple(np.round(pts[a] * 4).astype(int)), tuple(np.round(pts[b] * 4).astype(int)), 255, thick,
                 lineType=cv2.LINE_AA, shift=2)
    lens_alpha = float(rng.uniform(0.3, 0.8)) if style >= 0.4 and rng.random() < 0.4 else 0.0
    if lens_alpha:
        lm = np.zeros((h, w), np.uint8)
        for c in (left, right):
            cv2.ellipse(lm, (int(round(c[0] * 4)), int(round(c[1] * 4))),
                        (int(round(lens[0] * 4)), int(round(lens[1] * 4))), ang, 0, 360, 255, -1, shift=2)
        alpha = np.maximum(m.astype(np.float32) / 255.0, lens_alpha * lm.astype(np.float32) / 255.0)
    else:
        alpha = m.astype(np.float32) / 255.0
    return alpha, np.ones((h, w), np.float32), lens_alpha


def paint_occluders(
    image,
    landmarks2d,
    rng: np.random.Generator,
    kinds: Sequence[str] = OCCLUDER_KINDS,
    coverage: tuple[float, float] = (0.1, 0.35),
    count: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Paints ``count`` occluders, each of a kind drawn from ``kinds``, over the face.

    Args:
      image: ``[H, W, 3]`` uint8 or float in [0, 1].
      landmarks2d: ``[N, 2]`` face landmarks in the image's pixels (iBUG-68 places hair at the brows
        and glasses on the eyes; any other set uses the landmarks' box).
      rng: the random generator (the only source of randomness).
      kinds: occluder kinds, from ``OCCLUDER_KINDS`` ("hand", "hair", "bar").
      coverage: (min, max) size of a hand or hair occluder as a fraction of the face box's area
        (approximate: it sets the occluder's size; glasses follow the eyes instead).
      count: occluders painted.

    Returns:
      ``(image, occluded)``: the painted image (the input's dtype) and ``bool [H, W]``, True where an
      occluder covers more than half of the pixel.

    Raises:
      ValueError: an unknown kind, a malformed image or no finite landmark.
    """
    unknown = [k for k in kinds if k not in OCCLUDER_KINDS]
    if unknown or not kinds:
        raise ValueError(f"paint_occluders: kinds must be a non-empty subset of {OCCLUDER_KINDS}, got {tuple(kinds)}")
    img, was_uint8 = _to_float(image)
    h, w = img.shape[:2]
    cx, cy, fw, fh = face_box(landmarks2d)
    occluded = np.zeros((h, w), bool)
    for _ in range(int(count)):
        kind = kinds[int(rng.integers(len(kinds)))]
        frac = _uniform(rng, coverage)
        size = math.sqrt(max(frac, 1e-4) * fw * fh)
        if kind == "hand":
            # Mostly over the lower face (mouth, cheek, chin), sometimes an eye.
            centre = (cx + rng.uniform(-0.45, 0.45) * fw, cy + rng.uniform(-0.25, 0.5) * fh)
            alpha, shade = _hand((h, w), centre, size, rng)
            colour = skin_color(rng)
        elif kind == "hair":
            alpha, shade = _hair((h, w), landmarks2d, size * 1.4, rng)
            colour = _HAIR_COLOURS[int(rng.integers(len(_HAIR_COLOURS)))] * rng.uniform(0.8, 1.2)
        else:
            alpha, shade, _ = _bar((h, w), landmarks2d, size, rng)
            colour = np.full(3, rng.uniform(0.0, 0.25)) if rng.random() < 0.7 else rng.uniform(0, 0.6, size=3)
        layer = np.clip(colour[None, None, :] * shade[..., None], 0, 1)
        img = img * (1 - alpha[..., None]) + layer * alpha[..., None]
        occluded |= alpha > 0.5
    return _restore(img, was_uint8), occluded


# --------------------------------------------------------------------------- photometric
def blur(image, rng: np.random.Generator, sigma: tuple[float, float] = (0.3, 2.0), motion_probability: float = 0.3):
    """Gaussian blur of a random sigma (pixels), or with ``motion_probability`` a motion blur of
    length ≈ 3 sigma at a random angle (camera shake, fast head turns)."""
    img, was_uint8 = _to_float(image)
    s = _uniform(rng, sigma)
    if s <= 0:
        return _restore(img, was_uint8)
    if rng.random() < motion_probability:
        length = max(int(round(3 * s)), 2)
        k = np.zeros((2 * length + 1, 2 * length + 1), np.float32)
        ang = rng.uniform(0, np.pi)
        for t in np.linspace(-length, length, 4 * length + 1):
            k[int(round(length + t * math.sin(ang))), int(round(length + t * math.cos(ang)))] = 1.0
        out = cv2.filter2D(img, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)
    else:
        out = cv2.GaussianBlur(img, (0, 0), sigmaX=s, borderType=cv2.BORDER_REFLECT)
    return _restore(out, was_uint8)


def noise(image, rng: np.random.Generator, sigma: tuple[float, float] = (0.0, 0.04)):
    """Additive Gaussian noise (standard deviation in [0, 1] intensity units), partly per channel,
    partly shared (luminance) as in a camera sensor."""
    img, was_uint8 = _to_float(image)
    s = _uniform(rng, sigma)
    lum = rng.normal(size=img.shape[:2] + (1,)).astype(np.float32)
    chroma = rng.normal(size=img.shape).astype(np.float32)
    return _restore(img + s * (0.7 * lum + 0.5 * chroma), was_uint8)


def jpeg(image, rng: np.random.Generator, quality: tuple[int, int] = (25, 90)):
    """The image after JPEG encoding at a random quality (block and ringing artefacts of compressed video)."""
    img = np.asarray(image)
    was_uint8 = img.dtype == np.uint8
    u8 = img if was_uint8 else _restore(_to_float(img)[0], True)
    q = int(round(_uniform(rng, quality)))
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise ValueError("jpeg: OpenCV could not encode the image")
    out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out if was_uint8 else out.astype(np.float32) / 255.0


def color_jitter(
    image,
    rng: np.random.Generator,
    *,
    brightness: float = 0.25,
    contrast: float = 0.3,
    saturation: float = 0.4,
    gamma: float = 0.25,
    white_balance: float = 0.12,
    gradient: float = 0.35,
):
    """Lighting and camera colour changes: brightness (×exp(±)), contrast about the mean, saturation,
    gamma, per-channel gains (white balance) and a linear light gradient in a random direction
    (one side of the face brighter than the other). Each argument is the half-range of its factor."""
    img, was_uint8 = _to_float(image)
    h, w = img.shape[:2]
    img = img * math.exp(rng.uniform(-brightness, brightness))
    mean = img.mean()
    img = (img - mean) * math.exp(rng.uniform(-contrast, contrast)) + mean
    grey = img.mean(-1, keepdims=True)
    img = grey + (img - grey) * math.exp(rng.uniform(-saturation, saturation))
    img = img * np.exp(rng.uniform(-white_balance, white_balance, size=3))[None, None]
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xx / max(w - 1, 1) - 0.5) * math.cos(ang) + (yy / max(h - 1, 1) - 0.5) * math.sin(ang)) * 2
    img = img * (1.0 + rng.uniform(0, gradient) * ramp)[..., None]
    img = np.clip(img, 0, 1) ** math.exp(rng.uniform(-gamma, gamma))
    return _restore(img, was_uint8)


# --------------------------------------------------------------------------- backgrounds
def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A cluttered background, float32 ``[H, W, 3]`` in [0, 1]: a coloured gradient, low-frequency
    noise, a few rectangles and ellipses (furniture, windows, posters) and sometimes stripes."""
    base = rng.uniform(0.05, 0.95, size=3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.broadcast_to(base, (height, width, 3)).astype(np.float32).copy()
    tilt = rng.uniform(-0.4, 0.4, size=3)
    img += tilt[None, None] * ((xx / max(width - 1, 1) - 0.5) * 0.7 + (yy / max(height - 1, 1) - 0.5) * 0.3)[..., None]
    coarse = rng.normal(size=(4, 4, 3)).astype(np.float32)
    img += 0.12 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 8))):
        colour = tuple(float(c) for c in rng.uniform(0, 1, size=3))
        if rng.random() < 0.6:
            x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
            x1, y1 = x0 + rng.uniform(0.1, 0.6) * width, y0 + rng.uniform(0.1, 0.6) * height
            cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), colour, -1)
        else:
            c = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
            a = (int(rng.uniform(0.05, 0.3) * width) + 1, int(rng.uniform(0.05, 0.3) * height) + 1)
            cv2.ellipse(img, c, a, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    if rng.random() < 0.3:
        period = rng.uniform(0.03, 0.15) * width
        ang = rng.uniform(0, np.pi)
        stripes = np.sin(2 * np.pi * (xx * math.cos(ang) + yy * math.sin(ang)) / period) > 0
        img = np.where(stripes[..., None], img * 0.75, img)
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=rng.uniform(0.5, 3.0))
    return np.clip(img, 0, 1).astype(np.float32)


def composite(image, mask, background) -> np.ndarray:
    """``image`` where ``mask`` (``[H, W]`` bool or alpha in [0, 1]) else ``background`` (float
    ``[H, W, 3]``); the mask edge is softened by one pixel so the silhouette is not aliased."""
    img, was_uint8 = _to_float(image)
    bg, _ = _to_float(background)
    if bg.shape != img.shape:
        raise ValueError(f"composite: background {bg.shape} and image {img.shape} differ in shape")
    a = np.asarray(mask, np.float32)
    if a.shape != img.shape[:2]:
        raise ValueError(f"composite: mask {a.shape} must be the image's [H, W] {img.shape[:2]}")
    a = cv2.GaussianBlur(a, (3, 3), 0.6)
    return _restore(img * a[..., None] + bg * (1 - a[..., None]), was_uint8)


# --------------------------------------------------------------------------- all together
@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations ``augment`` applies and how strongly (probabilities per image)."""

    occluder_probability: float = setting(0.35, "Probability that an image gets occluders (hand, hair, glasses).")
    occluder_kinds: tuple[str, ...] = setting(OCCLUDER_KINDS, "Occluder kinds: hand, hair, bar (glasses-like).")
    occluder_coverage: tuple[float, float] = setting((0.08, 0.3), "Occluder size range, fraction of the face box.",
                                                     cli=False)
    max_occluders: int = setting(2, "At most this many occluders on one image.")
    background_probability: float = setting(0.8, "augment() given a face mask: probability of a random cluttered "
                                            "background behind the face (pretrain's renders always get one).")
    color_probability: float = setting(0.9, "Probability of colour / lighting jitter.")
    blur_probability: float = setting(0.4, "Probability of Gaussian or motion blur.")
    blur_sigma: tuple[float, float] = setting((0.3, 2.0), "Blur sigma range in pixels of the render.", cli=False)
    noise_probability: float = setting(0.5, "Probability of sensor noise.")
    noise_sigma: tuple[float, float] = setting((0.0, 0.04), "Noise standard deviation range (intensity units).",
                                               cli=False)
    jpeg_probability: float = setting(0.5, "Probability of JPEG re-encoding.")
    jpeg_quality: tuple[int, int] = setting((25, 90), "JPEG quality range.", cli=False)

    def __post_init__(self):
        for k in ("occluder_probability", "background_probability", "color_probability", "blur_probability",
                  "noise_probability", "jpeg_probability"):
            v = getattr(self, k)
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"AugmentConfig.{k} must be in [0, 1], got {v}")
        kinds = tuple(str(k) for k in self.occluder_kinds)
        object.__setattr__(self, "occluder_kinds", kinds)
        if not kinds or any(k not in OCCLUDER_KINDS for k in kinds):
            raise ValueError(f"AugmentConfig.occluder_kinds must be a non-empty subset of {OCCLUDER_KINDS}, "
                             f"got {kinds}")
        if int(self.max_occluders) < 1:
            raise ValueError(f"AugmentConfig.max_occluders must be ≥ 1, got {self.max_occluders}")

    @staticmethod
    def none() -> "AugmentConfig":
        """No augmentation at all."""
        return AugmentConfig(occluder_probability=0.0, background_probability=0.0, color_probability=0.0,
                             blur_probability=0.0, noise_probability=0.0, jpeg_probability=0.0)


def augment(image, landmarks2d, rng: np.random.Generator, config: AugmentConfig = AugmentConfig(), *,
            face_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Background (when ``face_mask`` is given), occluders, lighting/colour, blur, noise, JPEG — in that
    order, each with its probability. Returns ``(image, occluded [H, W] bool)``."""
    img = np.asarray(image)
    if face_mask is not None and rng.random() < config.background_probability:
        img = composite(img, face_mask, random_background(rng, img.shape[0], img.shape[1]))
    occluded = np.zeros(img.shape[:2], bool)
    if rng.random() < config.occluder_probability:
        img, occluded = paint_occluders(img, landmarks2d, rng, config.occluder_kinds, config.occluder_coverage,
                                        count=int(rng.integers(1, config.max_occluders + 1)))
    if rng.random() < config.color_probability:
        img = color_jitter(img, rng)
    if rng.random() < config.blur_probability:
        img = blur(img, rng, config.blur_sigma)
    if rng.random() < config.noise_probability:
        img = noise(img, rng, config.noise_sigma)
    if rng.random() < config.jpeg_probability:
        img = jpeg(img, rng, config.jpeg_quality)
    return img, occluded
