"""Training: the LightningModule and its schedules. Hydra stays out of this package."""

from vivit.training.schedules import cosine_with_warmup
from vivit.training.video_classifier import VideoClassifier, param_groups

__all__ = ["VideoClassifier", "cosine_with_warmup", "param_groups"]
