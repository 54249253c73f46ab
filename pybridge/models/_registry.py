"""The method registry: one typed record per method, read by the API, the CLI, the R bridge and the benchmarks.

Adding a method means writing its package under ``models/`` (estimator on the
shared base), its compute and public functions in ``api.py``, and one
:func:`register` call there; everything that lists, dispatches or loads
methods reads this registry.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Literal

Kind = Literal["annotation", "clustering"]
Reference = Literal["required", "optional", "none"]


@dataclass(frozen=True)
class MethodInfo:
    """What the rest of pybridge needs to know about one method.

    ``compute(query, reference=None, **options)`` returns an
    :class:`~pybridge.AnnotationResult` (annotation) or
    :class:`~pybridge.ClusteringResult` (clustering) and touches no container.
    ``maps_types``: a clustering method that also names a cell type per cell
    (from the reference's labels). ``extra_fields``: further per-cell fields of
    the method's result (ItClust's ``cell_score`` and ``raw_cell_types``).
    """

    name: str
    kind: Kind
    reference: Reference
    estimator: type
    compute: Callable
    maps_types: bool = False
    extra_fields: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in ("annotation", "clustering"):
            raise ValueError(f"kind must be 'annotation' or 'clustering', not {self.kind!r}")
        if self.reference not in ("required", "optional", "none"):
            raise ValueError(f"reference must be 'required', 'optional' or 'none', not {self.reference!r}")

    def outputs(self, key: str) -> list[str]:
        """The ``obs`` / ``obsm`` names a result stored under ``key`` may write in an AnnData."""
        if self.kind == "annotation":
            return [key, f"{key}_confidence", f"{key}_raw", f"{key}_probabilities", f"X_{key}"]
        names = [key, f"{key}_confidence", f"{key}_probabilities", f"X_{key}"]
        if self.maps_types:
            names.append(f"{key}_cell_type")
        return names + [f"{key}_cell_type_raw" if f == "raw_cell_types" else f"{key}_{f}" for f in self.extra_fields]

    def fit(
        self,
        estimator,
        reference=None,
        query=None,
        *,
        labels_key: str | None = "cell_type",
        layer: str | None = None,
        query_layer: str | None = None,
        **fit_options,
    ):
        """Fit ``estimator`` (an instance of :attr:`estimator`) on what this method learns from.

        A method without a reference learns from the data it clusters (``query``);
        the others from the labelled ``reference``, with the ``query`` as
        unlabelled target data where the method uses one. The CLI's ``train`` and
        R's ``Train*`` both fit through here.
        """
        params = inspect.signature(estimator.fit).parameters
        if self.reference == "none":
            if reference is not None:
                raise ValueError(
                    f"{self.name} is unsupervised and takes no reference; it learns from the data it clusters."
                )
            if query is None:
                raise ValueError(f"{self.name} learns from the data it clusters: pass that data as the query.")
            return estimator.fit(query, layer=query_layer, **fit_options)
        if reference is None:
            raise ValueError(f"{self.name} trains on a labelled reference; pass one.")
        kw = {"labels_key": labels_key, "layer": layer, **fit_options}
        if query is not None:
            if "query" not in params:
                raise ValueError(f"{self.name} trains on the reference alone; do not pass a query.")
            kw["query"] = query
            if "query_layer" in params:
                kw["query_layer"] = query_layer
        elif "query" in params and params["query"].default is inspect.Parameter.empty:
            raise ValueError(f"{self.name} trains on the reference and the query together; pass the query.")
        return estimator.fit(reference, **kw)

    def apply(self, model, data, *, layer: str | None = None):
        """Run a fitted (or loaded) model on new data: ``annotate`` for annotators, ``cluster`` for clusterers."""
        return model.annotate(data, layer=layer) if self.kind == "annotation" else model.cluster(data, layer=layer)


REGISTRY: dict[str, MethodInfo] = {}


def register(info: MethodInfo) -> MethodInfo:
    """Add a method to the registry (its name must be new)."""
    if info.name in REGISTRY and REGISTRY[info.name] != info:
        raise ValueError(f"A method named {info.name!r} is registered already.")
    REGISTRY[info.name] = info
    return info


def methods(kind: str | None = None) -> list[str]:
    """Names of the registered methods, all or of one kind, sorted."""
    return sorted(k for k, v in REGISTRY.items() if kind is None or v.kind == kind)


def get_method(name: str) -> MethodInfo:
    """The record of method ``name``, or a ``ValueError`` listing the available ones."""
    if name not in REGISTRY:
        raise ValueError(f"Unknown method {name!r}; available: {', '.join(methods())}.")
    return REGISTRY[name]


def method_of_estimator(est_cls: type) -> MethodInfo:
    for info in REGISTRY.values():
        if info.estimator is est_cls:
            return info
    raise ValueError(f"{est_cls.__name__} is not a registered estimator.")


def load(path, **options):
    """Load any saved pybridge model: its metadata (not its weights) names the method and so the class.

    ``options`` go to the estimator's ``load`` (``device``, ``verbose`` and
    prediction-time options such as ``reject``).
    """
    from .._io import read_meta

    meta = read_meta(path, warn=False)  # the estimator's load() warns about versions once
    return get_method(meta["method"]).estimator.load(path, **options)
