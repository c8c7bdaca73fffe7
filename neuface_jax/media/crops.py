"""Face crops: the reference box recipe, optional temporal smoothing, similarity warps that map back.

Recipe (NeuFace/DECA): the box of the landmarks (68 points or any set), side ``max(w, h) · 1.1``
then ``· 1.25``, centred on the box centre; a similarity warp (scale + translation, no rotation) of
that square to ``size × size`` pixels (224 by default).

Coordinates follow ``neuface_jax.core.camera``: pixels are continuous with an image spanning
``[0, W] × [0, H]`` (pixel ``(row i, column j)`` centred at ``(j + 0.5, i + 0.5)``); a crop transform
``M`` is a 2×3 matrix mapping original pixels to crop pixels, ``p_crop = M[:, :2] @ p + M[:, 2]``;
normalized crop coordinates are ``p_crop / size · 2 − 1`` (−1 the crop's left/top edge, +1 its
right/bottom edge). Boxes are ``[..., 3]`` rows ``(centre_x, centre_y, side)`` in original pixels.

The helpers here are NumPy in float64 (preprocessing runs on the host); the affine and
normalization maths are ``neuface_jax.core.camera``'s, called with ``xp=numpy``, so host and jitted
code share one implementation. ``prepare_clip`` turns a clip's frames, landmarks and crop transforms
into the optimizer's device pytree ``fit.ClipData`` (the optimizer itself does no image processing).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from neuface_jax.core import camera as camera_lib
from neuface_jax.core import fit as fit_lib

__all__ = [
    "BOX_SCALE",
    "CROP_SCALE",
    "CROP_SIZE",
    "CropTransforms",
    "landmark_boxes",
    "interpolate_invalid",
    "smooth_boxes",
    "box_to_transform",
    "boxes_to_transforms",
    "apply_transform",
    "invert_transform",
    "compose_transforms",
    "to_normalized",
    "from_normalized",
    "warp_crop",
    "crop_frames",
    "compute_crops",
    "prepare_clip",
]

BOX_SCALE = 1.1
CROP_SCALE = 1.25
CROP_SIZE = 224


def landmark_boxes(points, valid=None, *, box_scale: float = BOX_SCALE, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """Square crop boxes around landmarks.

    Args:
      points: ``[..., N, 2|3]`` landmarks in pixels (only x, y are used).
      valid: optional ``[...]`` mask; invalid rows give NaN boxes (see ``interpolate_invalid``).
      box_scale, crop_scale: the side is ``max(w, h) · box_scale · crop_scale``.

    Returns:
      ``float64 [..., 3]`` boxes ``(cx, cy, side)``.
    """
    p = np.asarray(points, np.float64)
    if p.ndim < 2 or p.shape[-1] not in (2, 3):
        raise ValueError(f"points must be [..., N, 2|3], got shape {p.shape}")
    lo = p[..., :2].min(axis=-2)
    hi = p[..., :2].max(axis=-2)
    centre = (lo + hi) / 2.0
    side = np.max(hi - lo, axis=-1) * float(box_scale) * float(crop_scale)
    boxes = np.concatenate([centre, side[..., None]], axis=-1)
    if valid is not None:
        valid = np.asarray(valid, bool)
        if valid.shape != boxes.shape[:-1]:
            raise ValueError(f"valid has shape {valid.shape}, expected {boxes.shape[:-1]}")
        boxes = np.where(valid[..., None], boxes, np.nan)
    return boxes


def interpolate_invalid(values, valid=None) -> np.ndarray:
    """Fills invalid rows of ``[T, K]`` (or ``[T]``) by linear interpolation over time.

    Rows before the first / after the last valid row copy the nearest valid row. ``valid``
    defaults to "all entries finite".

    Raises:
      ValueError: no valid row at all.
    """
    v = np.array(values, np.float64)
    squeeze = v.ndim == 1
    if squeeze:
        v = v[:, None]
    if valid is None:
        valid = np.all(np.isfinite(v), axis=-1)
    valid = np.asarray(valid, bool).reshape(-1)
    if valid.shape[0] != v.shape[0]:
        raise ValueError(f"valid has {valid.shape[0]} entries for {v.shape[0]} rows")
    if not valid.any():
        raise ValueError("no valid frame to interpolate from")
    if not valid.all():
        t = np.arange(v.shape[0])
        for k in range(v.shape[1]):
            v[~valid, k] = np.interp(t[~valid], t[valid], v[valid, k])
    return v[:, 0] if squeeze else v


def smooth_boxes(boxes, valid=None, *, method: str | None = "moving_average", window: int = 5, polyorder: int = 2) -> np.ndarray:
    """Temporal smoothing of per-frame boxes ``[T, 3]`` (centre and side).

    Invalid frames (``valid`` False, or NaN rows) are first interpolated from their neighbours.

    Args:
      method: ``"moving_average"`` (centred, window shrinks at the clip ends so nothing is padded
        in), ``"savgol"`` (Savitzky–Golay, keeps motion peaks better), or None (interpolation only).
      window: odd window length in frames (clipped to the clip length).
      polyorder: Savitzky–Golay polynomial order.

    Returns:
      ``[T, 3]`` smoothed boxes.
    """
    b = interpolate_invalid(boxes, valid)
    if b.ndim != 2 or b.shape[1] != 3:
        raise ValueError(f"boxes must be [T, 3], got {b.shape}")
    t = b.shape[0]
    if method is None or t < 2 or window <= 1:
        return b
    window = int(window) | 1  # odd
    if window > t:
        window = t if t % 2 else t - 1
    if window <= 1:
        return b
    if method == "moving_average":
        i = np.arange(t)
        # Centred window; near the ends it shrinks symmetrically (radius = distance to the end), so
        # no lag is introduced and nothing is padded in.
        r = np.minimum(np.minimum(i, t - 1 - i), window // 2)
        lo, hi = i - r, i + r + 1
        c = np.concatenate([np.zeros((1, 3)), np.cumsum(b, axis=0)])
        return (c[hi] - c[lo]) / (hi - lo)[:, None]
    if method == "savgol":
        from scipy.signal import savgol_filter

        return savgol_filter(b, window, min(int(polyorder), window - 1), axis=0, mode="interp")
    raise ValueError(f"unknown smoothing method {method!r}; use 'moving_average', 'savgol' or None")


def box_to_transform(box, size: int = CROP_SIZE) -> np.ndarray:
    """Similarity map ``[2, 3]`` sending the square box ``(cx, cy, side)`` onto a ``size``-pixel crop."""
    return boxes_to_transforms(np.asarray(box, np.float64)[None], size)[0]


def boxes_to_transforms(boxes, size: int = CROP_SIZE) -> np.ndarray:
    """``[..., 3]`` boxes → ``[..., 2, 3]`` transforms (original pixels → crop pixels)."""
    b = np.asarray(boxes, np.float64)
    if b.shape[-1] != 3:
        raise ValueError(f"boxes must be [..., 3], got {b.shape}")
    if not np.all(np.isfinite(b)) or np.any(b[..., 2] <= 0):
        raise ValueError("boxes must be finite with a positive side (interpolate invalid frames first)")
    s = float(size) / b[..., 2]
    m = np.zeros(b.shape[:-1] + (2, 3))
    m[..., 0, 0] = s
    m[..., 1, 1] = s
    m[..., 0, 2] = size / 2.0 - s * b[..., 0]
    m[..., 1, 2] = size / 2.0 - s * b[..., 1]
    return m


def _check_m(m) -> np.ndarray:
    return camera_lib.check_affine(np.asarray(m, np.float64), xp=np)


def apply_transform(points, m) -> np.ndarray:
    """Maps points through 2×3 transforms.

    Args:
      points: ``[..., N, 2]`` (or ``[..., N, 3]``: x, y are mapped and the third coordinate is
        multiplied by the transform's scale ``sqrt(|det A|)``, right for similarity maps).
      m: ``[..., 2, 3]``; leading dimensions broadcast against those of ``points``.
    """
    m = _check_m(m)
    p = np.asarray(points, np.float64)
    if p.ndim < 2 or p.shape[-1] not in (2, 3):
        raise ValueError(f"points must be [..., N, 2|3], got {p.shape}")
    xy = camera_lib.apply_affine(p[..., :2], m, xp=np)
    if p.shape[-1] == 2:
        return xy
    scale = np.sqrt(np.abs(np.linalg.det(m[..., :2])))
    return np.concatenate([xy, p[..., 2:] * scale[..., None, None]], axis=-1)


def invert_transform(m) -> np.ndarray:
    """Inverse of ``[..., 2, 3]`` affine maps (crop pixels → original pixels for a crop transform)."""
    return camera_lib.invert_affine(np.asarray(m, np.float64), xp=np)


def compose_transforms(second, first) -> np.ndarray:
    """``second ∘ first`` for ``[..., 2, 3]`` maps (apply ``first``, then ``second``)."""
    a2, a1 = _check_m(second), _check_m(first)
    lin = np.einsum("...ij,...jk->...ik", a2[..., :2], a1[..., :2])
    t = np.einsum("...ij,...j->...i", a2[..., :2], a1[..., 2]) + a2[..., 2]
    return np.concatenate([lin, t[..., None]], axis=-1)


def to_normalized(p_crop, size: int = CROP_SIZE) -> np.ndarray:
    """Crop pixels → normalized crop coordinates ``p / size · 2 − 1`` (x, y; a third coordinate is scaled by ``2 / size``)."""
    p = np.asarray(p_crop, np.float64)
    xy = camera_lib.pixels_to_normalized(p[..., :2], float(size), xp=np)
    return np.concatenate([xy, p[..., 2:] * (2.0 / size)], axis=-1)


def from_normalized(q, size: int = CROP_SIZE) -> np.ndarray:
    """Normalized crop coordinates → crop pixels ``(q + 1) · size / 2`` (inverse of ``to_normalized``)."""
    q = np.asarray(q, np.float64)
    xy = camera_lib.normalized_to_pixels(q[..., :2], float(size), xp=np)
    return np.concatenate([xy, q[..., 2:] * (size / 2.0)], axis=-1)


def _cv2_matrix(m: np.ndarray) -> np.ndarray:
    """Our continuous-edge transform → OpenCV's pixel-centre convention (x_cv = x − 0.5)."""
    a = m[:, :2]
    t = m[:, 2] + a @ np.array([0.5, 0.5]) - 0.5
    return np.concatenate([a, t[:, None]], axis=1)


def warp_crop(image: np.ndarray, m, size: int = CROP_SIZE, *, border_value=0, interpolation: str = "linear") -> np.ndarray:
    """Warps one image ``[H, W, C]`` through transform ``m`` ``[2, 3]`` into a ``size × size`` crop.

    Bilinear (or "area"/"nearest"/"cubic") sampling with OpenCV; outside the image is
    ``border_value``. When shrinking by more than 2× the image is pre-blurred with an area resize
    to avoid aliasing.
    """
    # cv2 (opencv-python-headless, a declared dependency) is imported when the first crop is warped:
    # it is heavy, and the crop maths here do not need it.
    import cv2

    m = _check_m(m)
    if m.shape != (2, 3):
        raise ValueError(f"warp_crop takes one [2, 3] transform, got {m.shape}")
    img = np.asarray(image)
    flags = {
        "linear": cv2.INTER_LINEAR,
        "nearest": cv2.INTER_NEAREST,
        "cubic": cv2.INTER_CUBIC,
        "area": cv2.INTER_AREA,
    }[interpolation]
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5 and interpolation == "linear":
        # Downscale the image first (area filter) so the warp does not alias; fold the
        # pre-scaling into the transform.
        f = max(scale * 1.5, 1e-3)
        h, w = img.shape[:2]
        nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        pre = np.array([[nw / w, 0.0, 0.0], [0.0, nh / h, 0.0]])
        m = compose_transforms(m, invert_transform(pre))
        img = small
    out = cv2.warpAffine(
        np.ascontiguousarray(img),
        _cv2_matrix(m),
        (int(size), int(size)),
        flags=flags,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )
    if out.ndim == 2 and img.ndim == 3:
        out = out[..., None]
    return out


def crop_frames(frames, transforms, size: int = CROP_SIZE, **kwargs) -> np.ndarray:
    """Warps ``[T, H, W, C]`` frames through ``[T, 2, 3]`` transforms → ``[T, size, size, C]`` (same dtype)."""
    frames = np.asarray(frames)
    transforms = _check_m(transforms)
    if transforms.shape[0] != frames.shape[0]:
        raise ValueError(f"{transforms.shape[0]} transforms for {frames.shape[0]} frames")
    return np.stack([warp_crop(f, m, size, **kwargs) for f, m in zip(frames, transforms)])


@dataclasses.dataclass
class CropTransforms:
    """Per-frame crops of one view.

    Attributes:
      matrices: ``[T, 2, 3]`` original pixels → crop pixels.
      boxes: ``[T, 3]`` the (smoothed, interpolated) boxes ``(cx, cy, side)`` in original pixels.
      size: crop side in pixels.
      valid: ``[T]`` frames whose box came from landmarks (others were interpolated).
    """

    matrices: np.ndarray
    boxes: np.ndarray
    size: int
    valid: np.ndarray

    def to_crop(self, points) -> np.ndarray:
        """Original pixels ``[T, N, 2|3]`` → crop pixels."""
        return apply_transform(points, self.matrices)

    def to_original(self, p_crop) -> np.ndarray:
        """Crop pixels ``[T, N, 2|3]`` → original pixels."""
        return apply_transform(p_crop, invert_transform(self.matrices))

    def to_normalized(self, points) -> np.ndarray:
        """Original pixels → normalized crop coordinates in [-1, 1]."""
        return to_normalized(self.to_crop(points), self.size)

    def from_normalized(self, q) -> np.ndarray:
        """Normalized crop coordinates → original pixels."""
        return self.to_original(from_normalized(q, self.size))

    def crop(self, frames, **kwargs) -> np.ndarray:
        """``[T, H, W, C]`` → ``[T, size, size, C]``."""
        return crop_frames(frames, self.matrices, self.size, **kwargs)


def compute_crops(
    points,
    valid=None,
    *,
    size: int = CROP_SIZE,
    box_scale: float = BOX_SCALE,
    crop_scale: float = CROP_SCALE,
    smoothing: str | None = None,
    window: int = 5,
) -> CropTransforms:
    """The reference crop recipe for a clip view.

    Args:
      points: ``[T, N, 2|3]`` landmarks in original pixels (e.g. the iBUG-68 set).
      valid: ``[T]`` frames with landmarks; others get boxes interpolated from their neighbours.
      smoothing: None (per-frame boxes, the reference), ``"moving_average"`` or ``"savgol"``
        (see ``smooth_boxes``).

    Raises:
      ValueError: no valid frame.
    """
    p = np.asarray(points)
    if p.ndim != 3:
        raise ValueError(f"points must be [T, N, 2|3], got {p.shape}")
    valid = np.ones(p.shape[0], bool) if valid is None else np.asarray(valid, bool)
    raw = landmark_boxes(p, valid, box_scale=box_scale, crop_scale=crop_scale)
    boxes = smooth_boxes(raw, valid, method=smoothing, window=window)
    return CropTransforms(matrices=boxes_to_transforms(boxes, size), boxes=boxes, size=int(size), valid=valid)


def prepare_clip(
    images: np.ndarray,
    landmarks_px: np.ndarray,
    crop_transforms: np.ndarray,
    *,
    encoder_size: int,
    crop_size: int = CROP_SIZE,
    visible: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    name: str = "clip",
) -> fit_lib.ClipData:
    """Host-side clip preparation: warps the encoder crops and maps landmarks into normalized crop
    coordinates, giving the optimizer's device pytree ``fit.ClipData``.

    Args:
      images: uint8 [T, W, H, Wd, 3] frames (every view the same size; pad first otherwise).
      landmarks_px: [T, W, L, 2] detected landmarks in image pixels (NaN allowed).
      crop_transforms: [T, W, 2, 3] image pixels → crop pixels of ``crop_size``.
      encoder_size: side of the encoder input; crops are warped straight to it.
      visible: [T, W, L] bool; False or non-finite landmarks are masked out.
      valid: [T, W] bool detection validity; invalid frames are masked out of every loss term.
      name: clip name for error messages.

    Every frame whose crop transform is finite gets its crop, masked frames included (a frame
    without a detection has an interpolated crop box on a real video): the encoder still sees the
    face there and predicts it, while the losses ignore it. Only frames with a non-finite crop
    transform (no box at all) are left black.

    Raises:
      ValueError: naming the clip when shapes disagree or no frame of any view is usable.
    """
    images = np.asarray(images)
    lmk = np.asarray(landmarks_px, np.float64)
    crops = np.asarray(crop_transforms, np.float64)
    if images.ndim != 5 or images.shape[-1] != 3:
        raise ValueError(f"{name}: images must be [T, W, H, W, 3], got {images.shape}")
    t, w = images.shape[:2]
    if lmk.shape[:2] != (t, w) or lmk.shape[-1] != 2:
        raise ValueError(f"{name}: landmarks must be [{t}, {w}, L, 2], got {lmk.shape}")
    if crops.shape != (t, w, 2, 3):
        raise ValueError(f"{name}: crop transforms must be [{t}, {w}, 2, 3], got {crops.shape}")
    mask = np.all(np.isfinite(lmk), axis=-1)
    if visible is not None:
        mask &= np.asarray(visible, bool)
    frame_ok = mask.any(-1)
    if valid is not None:
        frame_ok &= np.asarray(valid, bool)
    frame_ok &= np.all(np.isfinite(crops.reshape(t, w, -1)), axis=-1)
    if not frame_ok.any():
        raise ValueError(f"{name}: no frame of any view has a usable detection")
    mask &= frame_ok[..., None]
    scale = encoder_size / float(crop_size)
    enc_m = crops * scale
    safe_m = np.where(np.isfinite(enc_m), enc_m, np.array([[scale, 0, 0], [0, scale, 0]]))
    out_images = np.zeros((t, w, encoder_size, encoder_size, 3), np.float32)
    for ti in range(t):
        for wi in range(w):
            if np.all(np.isfinite(crops[ti, wi])):
                out_images[ti, wi] = warp_crop(images[ti, wi], safe_m[ti, wi], encoder_size) / 255.0
    crop_px = apply_transform(np.where(np.isfinite(lmk), lmk, 0.0), np.where(np.isfinite(crops), crops, 0.0))
    target = to_normalized(crop_px, crop_size)
    target = np.where(mask[..., None], target, 0.0)
    return fit_lib.ClipData(
        images=jnp.asarray(out_images),
        landmarks=jnp.asarray(target, jnp.float32),
        landmarks_mask=jnp.asarray(mask, jnp.float32),
        frame_mask=jnp.asarray(frame_ok, jnp.float32),
    )
