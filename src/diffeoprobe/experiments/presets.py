"""Presets: the sizes every figure is made at (one place for every number, with its reason).

- ``paper``: the full protocol of docs/science.md sections 6, 8 and 9 (width 1000, 10 seeds, the
  CIFAR-10 zoo, 250-300 epochs): for a GPU or a cluster (``--executor dask``).
- ``standard``: between the two: the 1D CNN at width 256 with the papers' training and 5 seeds, a
  2D scale-detection zoo, the Fashion-MNIST zoo for 30 epochs; hours on 2 CPU cores, minutes on a GPU.
- ``quick``: 2 CPU cores, at most 20 minutes for all figures: the 1D scale-detection CNN at width 64
  with the papers' training, 2 seeds, LeNet on the 2D task, P = 256 probes; a Fashion-MNIST zoo
  (all 60k images, 10 epochs, the CIFAR recipe) when that data set is present.
- ``tiny``: seconds, every figure end to end on micro sizes (tests and CI smoke runs). Its numbers
  mean nothing; its claims are checked all the same, so a broken pipeline shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from diffeoprobe.errors import DiffeoProbeError

__all__ = ["PRESETS", "Preset", "ZooNet", "get_preset"]


@dataclass(frozen=True)
class ZooNet:
    """A net of a zoo and how it is trained (docs/science.md section 8)."""

    model: str
    options: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 5e-4
    epochs: int | None = None  # its passes over the data (None: the preset's zoo_epochs)


@dataclass(frozen=True)
class Preset:
    """Sizes of every figure. Fields prefixed ``sd_`` are the 1D scale-detection CNN's."""

    name: str
    description: str
    seeds: tuple[int, ...]
    probe_size: int  # P, test images used as probes (docs/science.md section 4: 500)
    checkpoints: int  # log-spaced checkpoints of every run besides init and end
    threads: int | None  # torch threads per run (None: torch's default)
    executor: str  # default executor of the runs: serial | local | dask
    # the 1D scale-detection CNN (docs/science.md section 6)
    sd_d: int = 128  # signal length
    sd_xi: int = 32  # scale
    sd_depth: int = 7  # log2(d): 128 -> 1 with filter 2, stride 2
    sd_width: int = 1000
    sd_train: int = 1024
    sd_test: int = 512
    sd_batch: int = 8
    sd_lr_per_width: float = 0.01  # lr = sd_lr_per_width * width (NTK / mean-field scaling)
    sd_weight_decay: float = 0.0
    sd_epochs: int = 3000  # upper bound; runs stop at zero training error
    sd_tasks: tuple[int, ...] = (1, 2)
    sd_stride1: tuple[int, int] | None = None  # (filter, depth) of a stride-1 net on task 1
    sd_stride1_width: int | None = None  # its width (None: sd_width); stride 1 costs ~40x more
    sd_stride1_lr_per_width: float | None = None  # its lr / width (None: sd_lr_per_width)
    sd_stride1_epochs: int | None = None  # its epoch cap (None: sd_epochs)
    sd_stride1_seeds: int | None = None  # how many of the seeds it is trained with (None: all)
    # its optimiser: sgd at sd_stride1_lr_per_width x width, or adam at sd_stride1_adam_lr, with
    # batch sd_stride1_batch (None: sd_batch)
    sd_stride1_adam_lr: float | None = None
    sd_stride1_batch: int | None = None
    # the 2D scale-detection zoo (docs/science.md section 6, Fig. 5, 8, 9)
    sd2d_models: tuple[ZooNet, ...] = ()
    sd2d_epochs: int = 300
    sd2d_data: dict[str, Any] = field(  # the 2D task's data set options (docs/science.md section 6)
        default_factory=lambda: dict(dim=2, d=28, xi=14, gap=2, train_size=1024)
    )
    sd2d_seeds: int | None = None  # how many of the seeds the 2D zoo is trained with (None: all)
    # the idealised nets (docs/science.md section 7, docs/theory.md)
    theory_depth1: int = 256  # stride 1
    theory_kmin1: int = 16  # fits on k >= kmin1 (stride 1)
    theory_depth2: int = 10  # stride 2
    theory_size2: int | None = None  # input side at stride 2 (None: theory's default)
    theory_draws: int = 4
    theory_tolerance: float = 0.05  # on exponents (powers) and rates (units of ln 2)
    # noisy training (docs/science.md section 8)
    noise_norms: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0, 10.0, 30.0, 100.0)  # absolute
    noise_levels: tuple[float, ...] = ()  # s / ||x|| (mean image norm); overrides noise_norms
    noisy_seeds: tuple[int, ...] = (0,)  # of the 1D CNN on noisy signals
    noisy_zoo_seeds: tuple[int, ...] = (0,)  # of the zoo nets on noisy images
    noisy_sd: bool = False  # also the 1D scale-detection CNN on Task noisy_task
    noisy_task: int = 2
    noisy_models: tuple[str, ...] = ("vgg11bn", "resnet18")  # zoo nets, when their data is present
    # the zoo of real images (error versus R, pooling probes)
    zoo_dataset: str = "cifar10"
    zoo_dataset_options: dict[str, Any] = field(default_factory=dict)
    zoo: tuple[ZooNet, ...] = ()
    zoo_train_size: int | None = None
    zoo_test_size: int | None = 2000
    zoo_epochs: int = 250
    zoo_batch: int = 128
    zoo_augment: bool = True
    zoo_seeds: tuple[int, ...] = (0,)
    pooling_models: tuple[str, ...] = ("vgg11", "vgg11bn", "alexnet", "lenet")
    shuffle_permutations: int = 5
    # claims
    # initialisations averaged for the untrained value (docs/science.md section 4)
    init_seeds: int = 5
    r_drop: float = 10.0  # trained R at the last layer at least this many times below init
    judge_error_law: bool = True  # judge error versus R across the zoo (else report the fit)
    time_budget_s: float | None = None  # the preset's stated wall time
    device: str = "cpu"  # where every run trains and is measured (cpu, cuda, cuda:N)


class _Recipe(TypedDict, total=False):
    """Training settings of a :class:`ZooNet`, to unpack into it."""

    optimizer: str
    lr: float
    weight_decay: float


class _SdTraining(TypedDict):
    """Training settings of the 1D scale-detection CNN, to unpack into a :class:`Preset`."""

    sd_batch: int
    sd_lr_per_width: float
    sd_weight_decay: float


_CIFAR_SGD = _Recipe(optimizer="sgd", lr=0.1, weight_decay=5e-4)
_ADAM = _Recipe(optimizer="adam", lr=1e-3, weight_decay=0.0)

PAPER = Preset(
    name="paper",
    description=(
        "the full protocol of docs/science.md sections 6, 8, 9: the 1D CNN at width 1000 and a 2D zoo "
        "on scale detection (10 seeds), the CIFAR-10 zoo (250 epochs, SGD 0.1, cosine, crop + "
        "flip), noisy CIFAR-10; for a GPU or a cluster"
    ),
    seeds=tuple(range(10)),
    probe_size=500,
    checkpoints=10,
    threads=None,
    executor="local",
    sd_width=1000,
    sd_batch=8,
    sd_lr_per_width=0.01,
    # weight decay 0, not docs/science.md's 0.01: at lr 0.01 x width that decayed every weight of a
    # width-64 net to zero within 150 epochs (measured; not tried at width 1000)
    sd_weight_decay=0.0,
    sd_stride1=(5, 8),  # receptive field 33 >= xi + gap: stride 1 can see a pair 32 apart
    sd2d_models=(
        ZooNet("vgg11", lr=0.05),
        ZooNet("vgg11bn", lr=0.05),
        ZooNet("vgg13bn", lr=0.05),
        ZooNet("resnet18", lr=0.05),
        ZooNet("alexnet", lr=0.05),
        ZooNet("lenet", lr=0.05),
    ),
    theory_size2=64 * 2**10,
    zoo_dataset="cifar10",
    zoo_dataset_options=dict(normalize=True, download=True),
    zoo=(
        ZooNet("vgg11", **_CIFAR_SGD),
        ZooNet("vgg11bn", **_CIFAR_SGD),
        ZooNet("vgg16bn", **_CIFAR_SGD),
        ZooNet("vgg19bn", **_CIFAR_SGD),
        ZooNet("resnet18", **_CIFAR_SGD),
        ZooNet("resnet34", **_CIFAR_SGD),
        ZooNet("resnet50", **_CIFAR_SGD),
        ZooNet("alexnet", **_CIFAR_SGD),
        ZooNet("lenet", **_CIFAR_SGD),
        ZooNet("efficientnetb0", **_CIFAR_SGD),
        ZooNet("fc2", **_ADAM),
        ZooNet("fc4", **_ADAM),
        ZooNet("fc6", **_ADAM),
    ),
    zoo_test_size=None,
    zoo_seeds=(0, 1, 2),
    r_drop=10.0,
)

# The papers' training of the 1D scale-detection CNN: batch 8, plain SGD at lr 0.01 x width, no
# momentum, no weight decay (docs/science.md's 0.01 decayed every weight of a width-64 net to zero within
# 150 epochs at this lr: measured), hinge loss, to zero training error.
_PAPER_SD = _SdTraining(sd_batch=8, sd_lr_per_width=0.01, sd_weight_decay=0.0)
_FM_CNN = _Recipe(**_CIFAR_SGD)  # the CIFAR recipe on Fashion-MNIST: SGD 0.1, momentum 0.9, wd 5e-4

QUICK = Preset(
    name="quick",
    description=(
        "2 CPU cores, at most 20 minutes: the 1D scale-detection CNN at width 64 with the papers' "
        "training (batch 8, SGD at lr 0.01 x width, to zero training error; 2 seeds, trained "
        "together), ReLU and tanh, and on noisy signals; LeNet on the 2D task; P = 256 probes; "
        "when Fashion-MNIST is present, a zoo trained on all 60k images for 10 epochs with the "
        "CIFAR recipe (SGD 0.1, momentum 0.9, weight decay 5e-4, cosine, crop + flip) and noisy "
        "training of its simplecnn"
    ),
    seeds=(0, 1),
    probe_size=256,
    checkpoints=0,
    threads=1,  # tiny convolutions on shared cores: one thread per run is ~9x faster than two
    executor="local",
    sd_width=64,  # the papers' 1000 is hours on 2 cores; width 64 shows every effect (measured)
    **_PAPER_SD,
    sd_epochs=800,  # upper bound: task 1 reached zero training error at epochs 276-348 (width 64)
    # stride 1 (filter 5, depth 8: receptive field 33 >= xi + gap), width 16, one seed. With the
    # papers' SGD (lr 0.01 x width, batch 8) it stayed at chance for 300 epochs (train error 0.49,
    # 6.6 min of a core); with SGD at 4 x width it learnt features but not the task (test error
    # 0.54); Adam 3e-3 at batch 32 learns it (train error 0.06, test error 0.06 after 80 epochs)
    sd_stride1=(5, 8),
    sd_stride1_width=16,
    sd_stride1_adam_lr=3e-3,
    sd_stride1_batch=32,
    sd_stride1_epochs=80,
    sd_stride1_seeds=1,
    # the 2D task (d = 28, xi = 14) with LeNet, one seed: Adam 3e-3 reaches train error 0.01,
    # test error 0.02 on task 1 in 20 epochs (about a minute on one thread)
    sd2d_models=(ZooNet("lenet", optimizer="adam", lr=3e-3, weight_decay=0.0),),
    sd2d_epochs=20,
    sd2d_seeds=1,
    theory_depth1=256,
    theory_depth2=10,
    # noise relative to the data's mean image norm (1D signals sqrt(2), Fashion-MNIST 12.2): the
    # same levels mean the same corruption on both; 1 or more drowns the 1D task (chance)
    noise_levels=(0.0, 0.03, 0.1, 0.3),
    noisy_seeds=(0, 1),
    noisy_sd=True,
    noisy_task=2,
    noisy_models=("simplecnn",),
    zoo_dataset="fashionmnist",
    zoo=(
        # test errors after 10 epochs (measured): width 16 0.153, width 32 0.119 (3.3x the
        # time), width 16 with BatchNorm 0.112; LeNet (fixed width) at lr 0.1 0.156, at 0.05
        # 0.134, at 0.05 for 20 epochs 0.110 (about 2 minutes of a core)
        ZooNet("simplecnn", dict(width=16, batch_norm=True), **_FM_CNN),
        ZooNet("lenet", **(_FM_CNN | {"lr": 0.05}), epochs=20),
        ZooNet("fc2", **_ADAM),
        ZooNet("fc4", dict(width=256), **_ADAM),  # width 1024: 4.5 min a run, 256: under 1
    ),
    zoo_train_size=None,
    zoo_test_size=None,
    zoo_epochs=10,
    zoo_augment=True,
    pooling_models=("simplecnn",),
    r_drop=10.0,
    judge_error_law=False,  # 4 nets, 10 epochs: error versus R is reported as a fit, not judged
    time_budget_s=20 * 60,
)

STANDARD = Preset(
    name="standard",
    description=(
        "between quick and paper (hours on 2 CPU cores, minutes on one GPU): the 1D "
        "scale-detection CNN at width 256 with the papers' training, 5 seeds, ReLU and tanh, "
        "noisy signals; a 2D scale-detection zoo (LeNet, simplecnn, VGG11bn); P = 500 "
        "probes; the Fashion-MNIST zoo (simplecnn, LeNet, VGG11bn, ResNet18, fc2, fc4) for 30 "
        "epochs with the CIFAR recipe, and noisy training of simplecnn and ResNet18"
    ),
    seeds=(0, 1, 2, 3, 4),
    probe_size=500,
    checkpoints=4,
    threads=1,
    executor="local",
    sd_width=256,
    **_PAPER_SD,
    sd_epochs=3000,
    sd_stride1=(5, 8),  # as quick (Adam: the papers' SGD leaves it at chance), 2 seeds
    sd_stride1_width=16,
    sd_stride1_adam_lr=3e-3,
    sd_stride1_batch=32,
    sd_stride1_epochs=80,
    sd_stride1_seeds=2,
    sd2d_models=(
        ZooNet("lenet", optimizer="adam", lr=3e-3, weight_decay=0.0),
        ZooNet("simplecnn", dict(width=32), optimizer="adam", lr=3e-3, weight_decay=0.0),
        ZooNet("vgg11bn", lr=0.05),  # 25 s an epoch on one core; ResNet18 90 s: paper preset
    ),
    sd2d_epochs=30,
    sd2d_seeds=2,
    # 2048 test images: the whole 2D test split (~150k pairs) costs minutes per evaluation
    sd2d_data=dict(dim=2, d=28, xi=14, gap=2, train_size=1024, test_size=2048),
    theory_size2=64 * 2**10,
    noise_levels=(0.0, 0.01, 0.03, 0.1, 0.3, 1.0),
    noisy_seeds=(0, 1),
    noisy_sd=True,
    noisy_task=2,
    noisy_models=("simplecnn", "resnet18"),
    zoo_dataset="fashionmnist",
    zoo=(
        ZooNet("simplecnn", dict(width=32), **_FM_CNN),
        ZooNet("lenet", **_FM_CNN),
        ZooNet("vgg11bn", **_FM_CNN),
        ZooNet("resnet18", **_FM_CNN),
        ZooNet("fc2", **_ADAM),
        ZooNet("fc4", **_ADAM),
    ),
    zoo_train_size=None,
    zoo_test_size=None,
    zoo_epochs=30,
    zoo_augment=True,
    zoo_seeds=(0, 1),
    pooling_models=("simplecnn", "lenet", "vgg11bn"),
    r_drop=10.0,
)

TINY = Preset(
    name="tiny",
    description=(
        "seconds: every figure end to end on micro sizes (a width-16 1D CNN on 32-pixel signals, "
        "a 2D scale-detection zoo of 12 x 12 images); for tests, its numbers mean nothing"
    ),
    seeds=(0,),
    probe_size=32,
    checkpoints=0,
    threads=1,
    executor="serial",
    sd_d=32,
    sd_xi=8,
    sd_depth=5,
    sd_width=16,
    sd_train=128,
    sd_test=64,
    sd_batch=32,
    sd_lr_per_width=0.4,
    sd_epochs=2,
    sd_stride1=(3, 4),
    sd_stride1_width=8,
    sd_stride1_seeds=1,
    sd2d_models=(ZooNet("simplecnn", dict(depth=2, width=4), **_ADAM),),
    sd2d_epochs=1,
    sd2d_data=dict(dim=2, d=12, xi=6, gap=1, train_size=96, test_size=48),
    theory_depth1=32,
    theory_kmin1=8,
    theory_depth2=6,
    theory_draws=1,
    theory_tolerance=0.25,
    noise_norms=(0.0, 1.0),
    noisy_seeds=(0,),
    noisy_sd=True,
    noisy_task=2,
    noisy_models=(),
    zoo_dataset="scale-detection",
    zoo_dataset_options=dict(dim=2, d=12, xi=6, gap=1, train_size=96, test_size=48),
    zoo=(
        ZooNet("simplecnn", dict(depth=2, width=4), **_ADAM),
        ZooNet("fc2", dict(width=8), **_ADAM),
    ),
    zoo_train_size=None,
    zoo_test_size=None,
    zoo_epochs=1,
    zoo_batch=32,
    zoo_augment=False,
    pooling_models=("simplecnn",),
    shuffle_permutations=2,
    init_seeds=2,
    r_drop=5.0,
)

PRESETS: dict[str, Preset] = {p.name: p for p in (QUICK, STANDARD, PAPER, TINY)}


def get_preset(name: str | Preset) -> Preset:
    """The preset called ``name`` (a :class:`Preset` is returned as it is)."""
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise DiffeoProbeError(f"preset: unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]
