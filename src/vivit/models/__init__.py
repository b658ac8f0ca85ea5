"""The ViViT family. Imports only torch, einops, timm and vivit.rules (plain Python): it runs on a bare GPU image."""

from vivit.models.complexity import count_macs, count_params
from vivit.models.layers import record_attention
from vivit.models.tokenisers import TubeletTokeniser, UniformFrameTokeniser, VideoTokeniser
from vivit.models.vivit import (
    FactorisedDotProduct,
    FactorisedEncoder,
    FactorisedSelfAttention,
    SpatioTemporal,
    VideoTransformer,
)

__all__ = [
    "FactorisedDotProduct",
    "FactorisedEncoder",
    "FactorisedSelfAttention",
    "SpatioTemporal",
    "TubeletTokeniser",
    "UniformFrameTokeniser",
    "VideoTokeniser",
    "VideoTransformer",
    "count_macs",
    "count_params",
    "record_attention",
]
