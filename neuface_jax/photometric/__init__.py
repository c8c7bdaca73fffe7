"""Differentiable rendering and the photometric / silhouette loss terms (see docs/photometric.md).

Importing this package registers the loss terms ``"photometric"``, ``"silhouette"`` and
``"face_oval"`` in ``core.losses``, so a loss config can name them::

    import neuface_jax.photometric  # noqa: F401  (registers the terms)
    config = FitConfig(loss={"landmark": 10.0, "temporal": 100.0,
                             "photometric": ("photometric", 2.0, {"refresh_every": 8})})

Stable API: ``rasterize`` / ``rasterize_cached`` / ``Raster`` (visibility, no gradient),
``render_batch`` / ``Rendering`` (albedo × SH light, differentiable), ``photometric_loss``,
``silhouette_loss``, ``photometric_term``, ``silhouette_term``, ``AlbedoModel``,
``demo_albedo_model``, ``procedural_albedo``, ``directional_light_sh``.
"""

from neuface_jax.photometric.albedo import (
    AlbedoModel,
    demo_albedo_model,
    face_region,
    procedural_albedo,
    procedural_albedo_model,
    register_face_region,
)
from neuface_jax.photometric.loss import (
    PhotometricConfig,
    SilhouetteConfig,
    photometric_loss,
    photometric_term,
    silhouette_loss,
    silhouette_term,
)
from neuface_jax.photometric.raster import Raster, rasterize, rasterize_cached, rasterize_host, screen_vertices
from neuface_jax.photometric.render import Rendering, directional_light_sh, render_batch, sh_basis, sh_shading

__all__ = [
    "AlbedoModel", "PhotometricConfig", "Raster", "Rendering", "SilhouetteConfig", "demo_albedo_model",
    "directional_light_sh", "face_region", "photometric_loss", "photometric_term", "procedural_albedo",
    "procedural_albedo_model", "rasterize", "rasterize_cached", "rasterize_host", "register_face_region",
    "render_batch", "screen_vertices", "sh_basis", "sh_shading", "silhouette_loss", "silhouette_term",
]
