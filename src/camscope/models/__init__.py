"""Models: loading (torchvision, timm, the offline default), class names, preprocessing, photos, the small model zoo."""

from camscope.models.classes import class_index, imagenet_classes
from camscope.models.devices import check_device
from camscope.models.efficientnet_lite0 import (
    DEFAULT_MODEL,
    convert_efficientnet_lite0_state_dict,
    efficientnet_lite0_weights_path,
)
from camscope.models.loading import load_model
from camscope.models.photos import sample_image, sample_images
from camscope.models.preprocessing import DataConfig, Photo, data_config, load_image, load_photo, preprocess

__all__ = [
    "DEFAULT_MODEL",
    "DataConfig",
    "Photo",
    "check_device",
    "class_index",
    "convert_efficientnet_lite0_state_dict",
    "data_config",
    "efficientnet_lite0_weights_path",
    "imagenet_classes",
    "load_image",
    "load_model",
    "load_photo",
    "preprocess",
    "sample_image",
    "sample_images",
]
