"""Models by name (:func:`build`, :func:`available`): the configurable :class:`SimpleCNN` (1D and
2D), the CNN zoo and fully connected nets of the papers, and the 1D scale-detection CNN.
"""

from .alexnet import AlexNet
from .efficientnet import EfficientNet
from .fully_connected import FullyConnected
from .lenet import LeNet
from .registry import MODELS, available, build
from .resnet import ResNet
from .scale_cnn import ScaleCNN1d
from .simple_cnn import SimpleCNN
from .vgg import VGG

__all__ = [
    "MODELS",
    "VGG",
    "AlexNet",
    "EfficientNet",
    "FullyConnected",
    "LeNet",
    "ResNet",
    "ScaleCNN1d",
    "SimpleCNN",
    "available",
    "build",
]
