"""ViViT (Arnab et al., ICCV 2021) as a Lightning + Hydra framework.

Subpackages: ``vivit.models`` (torch/einops/timm only), ``vivit.training`` (the LightningModule),
``vivit.data`` (datasets and the built-in moving digits), ``vivit.pipeline`` (config → run).
"""

__version__ = "0.1.0"
