"""Model registry: ``create_model(name, ...)`` builds any model listed by ``list_models()``.

Every model returns logits ``(N, num_classes)`` for square images ``(N, in_chans, S, S)``
(``in_chans`` 3 = RGB or 4 = RGBY) of any size from ``ModelInfo.min_size`` up.
"""

from hpa_tune.models import baseline, capsnet, torchvision_models  # noqa: F401  (registration)
from hpa_tune.models.adapt import adapt_input_conv, count_trainable_parameters, freeze_up_to
from hpa_tune.models.capsnet import CapsNet
from hpa_tune.models.factory import create_model
from hpa_tune.models.pretrained import PretrainedWeightsNotFoundError, imagenet_cache_path
from hpa_tune.models.registry import ModelInfo, get_model_info, list_models, register_model

__all__ = [
    "CapsNet",
    "ModelInfo",
    "PretrainedWeightsNotFoundError",
    "adapt_input_conv",
    "count_trainable_parameters",
    "create_model",
    "freeze_up_to",
    "get_model_info",
    "imagenet_cache_path",
    "list_models",
    "register_model",
]
