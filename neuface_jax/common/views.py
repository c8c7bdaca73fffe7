"""Camera view names shared by the synthetic rigs and the dataset manifests."""

from __future__ import annotations

#: MEAD's 7 camera views in the canonical order: (name, yaw degrees, pitch degrees). A positive yaw
#: places the camera toward the subject's left; a positive pitch looks from above.
MEAD_VIEW_ANGLES = (
    ("front", 0.0, 0.0),
    ("left_30", 30.0, 0.0),
    ("right_30", -30.0, 0.0),
    ("left_60", 60.0, 0.0),
    ("right_60", -60.0, 0.0),
    ("top", 0.0, 30.0),
    ("down", 0.0, -30.0),
)
#: The MEAD view names, in the canonical order.
MEAD_VIEWS = tuple(name for name, _, _ in MEAD_VIEW_ANGLES)
