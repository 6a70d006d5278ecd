"""Models of the course, one file per family, all registered in :mod:`.registry`.

Importing this package imports every model file, so the registry is complete.
"""
from .registry import PROFILES, REGISTRY, TASKS, ModelSpec, get_model, get_spec, list_models, register, sections
from . import lenet  # noqa: F401  (registers lenet, lenet_relu)
from . import alexnet  # noqa: F401  (alexnet)
from . import vgg  # noqa: F401  (vgg11, vgg11_small)
from . import nin  # noqa: F401  (nin, nin_one_1x1)
from . import googlenet  # noqa: F401  (googlenet)
from . import batchnorm  # noqa: F401  (lenet_bn_scratch, lenet_bn)
from . import resnet  # noqa: F401  (resnet18)
from . import densenet  # noqa: F401  (densenet)
from . import unet, densebox  # noqa: F401  (segmentation and detection sections)
from . import best  # noqa: F401  (fashion_resnet: the chapter put together)

__all__ = ["PROFILES", "REGISTRY", "TASKS", "ModelSpec", "get_model", "get_spec", "list_models", "register", "sections"]
