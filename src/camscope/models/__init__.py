"""Models: loading (torchvision, timm, the offline default), class names, preprocessing, the small model zoo."""

from camscope.models.loading import (
    DEFAULT_MODEL,
    DataConfig,
    class_index,
    convert_efficientnet_lite0_state_dict,
    data_config,
    efficientnet_lite0_weights_path,
    imagenet_classes,
    load_image,
    load_model,
    preprocess,
    sample_image,
    sample_images,
)

__all__ = [
    "DEFAULT_MODEL",
    "DataConfig",
    "class_index",
    "convert_efficientnet_lite0_state_dict",
    "data_config",
    "efficientnet_lite0_weights_path",
    "imagenet_classes",
    "load_image",
    "load_model",
    "preprocess",
    "sample_image",
    "sample_images",
]
