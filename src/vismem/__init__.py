"""vismem: image classification as an editable visual memory.

A frozen encoder turns images into vectors; a durable memory of labelled exemplars is
searched by nearest neighbours; the neighbours vote, and every vote is explained.
"""

from .decide import VOTES, Decision, Neighbor, VoteParams
from .encoders import available_encoders, create_encoder
from .errors import (
    BadVectorsError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    DiskFullError,
    EmptyMemoryError,
    EncoderError,
    OutputExistsError,
    InvalidInputError,
    ItemNotFoundError,
    MemoryBusyError,
    MemoryClosedError,
    MemoryExistsError,
    MemoryNotFoundError,
    NotCalibratedError,
    PartlyDoneError,
    PurgeUnfinishedError,
    ReadOnlyMemoryError,
    VismemError,
)
from .images import Skipped
from .ingest import AddReport
from .memory import Hit, Memory
from .settings import MemorySettings
from .store import Filter, Item
from .store.checkpoints import Checkpoint, RollbackReport

__version__ = "0.2.0"

__all__ = [
    "AddReport",
    "BadVectorsError",
    "Checkpoint",
    "CheckpointExistsError",
    "CheckpointNotFoundError",
    "Decision",
    "DiskFullError",
    "EmptyMemoryError",
    "EncoderError",
    "OutputExistsError",
    "Filter",
    "Hit",
    "InvalidInputError",
    "Item",
    "ItemNotFoundError",
    "Memory",
    "MemoryBusyError",
    "MemoryClosedError",
    "MemoryExistsError",
    "MemoryNotFoundError",
    "MemorySettings",
    "Neighbor",
    "NotCalibratedError",
    "PartlyDoneError",
    "PurgeUnfinishedError",
    "ReadOnlyMemoryError",
    "RollbackReport",
    "Skipped",
    "VOTES",
    "VismemError",
    "VoteParams",
    "available_encoders",
    "create_encoder",
]
