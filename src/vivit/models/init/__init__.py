"""Initialising a ViViT variant from pretrained weights, strictly and with an ``InitReport``; one module per source:

- ``image_vit``: an image ViT (ViViT §3.4; timm, transformers ViT, Google .npz): ``ImageViTInit``.
- ``hf_vivit``: a released transformers ViViT into Model 1: ``HFViViTInit``.
- ``scenic_vivit``: a released Scenic (Flax) ViViT into Model 1 or 2: ``ScenicViViTInit``.
- ``common``: what they share (``InitReport``, ``InitError``, reading a file of tensors).

An init config (conf/init/*.yaml) names one of the three as ``vivit.models.init.<class>``, the path that run configs
stored in checkpoints keep: ``init(net)`` loads the weights and returns the report.
"""

from vivit.models.init.common import InitError, InitReport
from vivit.models.init.hf_vivit import HFViViTInit, adapt_hf_vivit
from vivit.models.init.image_vit import ImageViTInit, adapt_image_vit, read_state_dict, source_normalisation
from vivit.models.init.scenic_vivit import ScenicViViTInit, adapt_scenic_vivit, read_scenic_params

__all__ = [
    "HFViViTInit",
    "ImageViTInit",
    "InitError",
    "InitReport",
    "ScenicViViTInit",
    "adapt_hf_vivit",
    "adapt_image_vit",
    "adapt_scenic_vivit",
    "read_scenic_params",
    "read_state_dict",
    "source_normalisation",
]
