"""Capture every layer's output in one forward pass.

Two mechanisms, one interface. :func:`capture` runs ``model`` on a batch and calls
``on_output(name, tensor)`` for each representation as soon as it is produced, so the caller can
reduce it at once (nothing is kept between layers, and a later ``inplace=True`` activation cannot
corrupt what was seen).

- ``"hooks"``: forward hooks on modules (by default every leaf module). A module called several
  times in one forward (a shared ReLU) gives several layers, named by call order:
  ``block.relu``, ``block.relu:1``, ...
- ``"fx"``: the model is traced with :mod:`torch.fx` and every node is a layer, so operations written
  as functions inside ``forward`` (``F.relu``, ``x + y``, ``torch.cat``) are seen too. Module calls keep
  their module path as name (same names as with hooks); functional nodes use the fx node name
  (``add``, ``relu_1``, ``cat``). Pure shape operations (view, flatten, ...) are skipped: they do not
  change the representation.
- ``"auto"`` (default): fx when the model traces, hooks otherwise.

Layer names are fixed before any data is seen (:func:`plan_capture`), so a bad name is refused
before work starts.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from diffeoprobe.errors import DiffeoProbeError

__all__ = [
    "CAPTURE_MODES",
    "CapturePlan",
    "OutputCallback",
    "output_tensor",
    "plan_capture",
    "run_captured",
]

OutputCallback = Callable[[str, torch.Tensor], None]

CAPTURE_MODES = ("auto", "fx", "hooks")

# Nodes whose output is a re-arrangement of their input: not a new representation.
_SHAPE_METHODS = frozenset(
    {
        "view",
        "reshape",
        "flatten",
        "contiguous",
        "permute",
        "transpose",
        "squeeze",
        "unsqueeze",
        "size",
        "dim",
        "expand",
        "to",
        "type",
        "float",
        "double",
        "half",
        "detach",
        "clone",
    }
)
_SHAPE_FUNCTIONS = frozenset(
    {
        torch.flatten,
        torch.reshape,
        torch.squeeze,
        torch.unsqueeze,
        torch.permute,
        torch.transpose,
        operator.getitem,
        getattr,
    }
)


@dataclass
class CapturePlan:
    """Which representations one forward pass reports, and how they are captured.

    Attributes:
        mode: ``"fx"`` or ``"hooks"``.
        names: layer names in the order they fire (known in advance for fx; for hooks the call
            order is learned from the first batch, see :meth:`Capturer.names`).
        modules: for each selected module path (hooks) or node name (fx), the module path it
            belongs to (``""`` for functional nodes).
    """

    mode: str
    selected: list[str]
    graph_module: fx.GraphModule | None = None
    node_names: dict[str, str] = field(default_factory=dict)  # fx node name -> layer name
    modules: dict[str, str] = field(default_factory=dict)  # layer name -> module path


class _LeafTracer(fx.Tracer):
    """Every module without children is a leaf: a user's own parametrised layer (a scaled conv)
    is one capturable layer named by its path, as with hooks, instead of being traced through.
    """

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return super().is_leaf_module(m, module_qualified_name) or not any(
            True for _ in m.children()
        )


def _leaf_modules(model: nn.Module) -> list[str]:
    return [
        name for name, m in model.named_modules() if name and not any(True for _ in m.children())
    ]


def _fx_layer_names(gm: fx.GraphModule) -> tuple[dict[str, str], dict[str, str]]:
    """Map every capturable fx node to a layer name; module calls use their path."""
    node_names: dict[str, str] = {}
    modules: dict[str, str] = {}
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            base = str(node.target)
        elif node.op == "call_function" and node.target not in _SHAPE_FUNCTIONS:
            base = node.name
        elif node.op == "call_method" and node.target not in _SHAPE_METHODS:
            base = node.name
        else:
            continue
        k = calls.get(base, 0)
        calls[base] = k + 1
        name = base if k == 0 else f"{base}:{k}"
        node_names[node.name] = name
        modules[name] = str(node.target) if node.op == "call_module" else ""
    return node_names, modules


def _base(name: str) -> str:
    return name.split(":", 1)[0]


def output_tensor(out: object, where: str = "model output") -> torch.Tensor | None:
    """The tensor a model (or a layer) returns: itself, the first tensor of a tuple or list, or of
    a mapping (``logits`` first when present: a Hugging Face ``ModelOutput`` is a mapping);
    ``None`` when there is none.

    >>> output_tensor({"loss": None, "logits": torch.ones(1)})
    tensor([1.])
    """
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        logits = out.get("logits")
        if isinstance(logits, torch.Tensor):
            return logits
        values: Sequence[object] = list(out.values())
    elif isinstance(out, (tuple, list)):
        values = out
    else:
        return None
    return next((v for v in values if isinstance(v, torch.Tensor)), None)


def _expand(wanted: list[str], available: Sequence[str]) -> list[str]:
    """Glob patterns (``encoder.*.output``, ``features.[0-3]``) replaced by the names they match,
    in the model's order; a pattern that matches nothing is an error naming it.
    """
    out: list[str] = []
    for name in wanted:
        if not any(c in name for c in "*?["):
            out.append(name)
            continue
        matched = [a for a in available if fnmatch.fnmatchcase(a, name)]
        if not matched:
            raise DiffeoProbeError(
                f"layers: the pattern {name!r} matches no layer; available: {', '.join(available)}"
            )
        out += [m for m in matched if m not in out]
    return out


def plan_capture(
    model: nn.Module, layers: Sequence[str] | None = None, mode: str = "auto"
) -> CapturePlan:
    """Decide how to capture ``layers`` of ``model`` and check that every name exists.

    Args:
        model: any ``nn.Module``; call it in the mode (train/eval) it will be measured in.
        layers: names to capture (module paths such as ``features.3``, call names such as
            ``block.relu:1``, fx node names such as ``add``), or glob patterns of them
            (``encoder.layer.*.output``). ``None``: every leaf module (hooks) or every non-shape
            node (fx). ``"input"`` and ``"output"`` are handled by the caller.
        mode: ``"auto"``, ``"fx"`` or ``"hooks"``.

    Raises:
        DiffeoProbeError: unknown mode, unknown layer name (the message lists valid ones), or
            ``mode="fx"`` for a model that cannot be traced.
    """
    if mode not in CAPTURE_MODES:
        raise DiffeoProbeError(f"capture must be one of {', '.join(CAPTURE_MODES)}, got {mode!r}")
    wanted = [name for name in (layers or []) if name not in ("input", "output")]
    module_paths = {name for name, _ in model.named_modules() if name}
    gm = None
    if mode in ("auto", "fx"):
        try:
            gm = fx.GraphModule(model, _LeafTracer().trace(model))
        except Exception as exc:  # tracing fails on data-dependent control flow, among others
            if mode == "fx":
                raise DiffeoProbeError(
                    f"capture='fx' but the model cannot be traced by torch.fx ({type(exc).__name__}: {exc}); "
                    "use capture='hooks'"
                ) from exc
    if gm is not None:
        node_names, modules = _fx_layer_names(gm)
        known = set(modules)
        try:
            wanted = _expand(wanted, list(modules))
        except DiffeoProbeError:
            if mode == "fx":
                raise
            wanted = [name for name in (layers or []) if name not in ("input", "output")]
        if all(name in known for name in wanted) or mode == "fx":
            unknown = [name for name in wanted if name not in known]
            if unknown:
                raise DiffeoProbeError(
                    f"layers: unknown layer name(s) {unknown}; available: {', '.join(['input', *modules, 'output'])}"
                )
            selected = wanted if layers is not None else list(modules)
            return CapturePlan("fx", selected, gm, node_names, {n: modules[n] for n in selected})
    wanted = _expand(wanted, [name for name, _ in model.named_modules() if name])
    unknown = [name for name in wanted if _base(name) not in module_paths]
    if unknown:
        available = ["input", *_leaf_modules(model), "output"]
        raise DiffeoProbeError(
            f"layers: unknown layer name(s) {unknown}; modules that can be selected include: {', '.join(available)}"
        )
    selected = wanted if layers is not None else _leaf_modules(model)
    return CapturePlan("hooks", selected, modules={n: _base(n) for n in selected})


class _CaptureInterpreter(fx.Interpreter):
    def __init__(
        self, gm: fx.GraphModule, node_names: dict[str, str], on_output: OutputCallback
    ) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self._node_names = node_names
        self._on_output = on_output

    def run_node(self, n: fx.Node) -> object:
        out = super().run_node(n)
        name = self._node_names.get(n.name)
        # a module may return a tuple (attention blocks): its first tensor is its representation
        tensor = output_tensor(out) if n.op == "call_module" else out
        if name is not None and isinstance(tensor, torch.Tensor):
            self._on_output(name, tensor)
        return out


@contextmanager
def _module_hooks(model: nn.Module, paths: set[str], on_output: OutputCallback) -> Iterator[None]:
    """Register forward hooks on ``paths``; always removed, even when the forward raises."""
    calls: dict[str, int] = {}
    handles = []

    def make_hook(path: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            k = calls.get(path, 0)
            calls[path] = k + 1
            tensor = output_tensor(output)  # a layer may return a tuple (attention blocks)
            if tensor is not None:
                on_output(path if k == 0 else f"{path}:{k}", tensor)

        return hook

    try:
        for name, module in model.named_modules():
            if name in paths:
                handles.append(module.register_forward_hook(make_hook(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_captured(
    model: nn.Module, plan: CapturePlan, x: torch.Tensor, on_output: OutputCallback
) -> object:
    """Run ``model(x)`` once, calling ``on_output(name, tensor)`` for every selected layer.

    Returns the model's output. With hooks, every call of a selected module is reported
    (``path``, ``path:1``, ...); the caller filters call names it does not want.
    """
    if plan.mode == "fx":
        wanted = set(plan.selected)
        names = {node: name for node, name in plan.node_names.items() if name in wanted}
        assert plan.graph_module is not None  # plan_capture traced it
        return _CaptureInterpreter(plan.graph_module, names, on_output).run(x)
    with _module_hooks(model, {_base(name) for name in plan.selected}, on_output):
        return model(x)
