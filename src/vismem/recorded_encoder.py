"""The encoder a memory records, and the checks that hold a memory to it.

A memory records its encoder's identity when it is made (`EncoderIdentity`: the name, the
weights file, the id): its vectors are comparable only with that encoder's. `load` builds
it, checked before the build where the weights' digest is known (a changed weights file is
refused before an ONNX export, ~16 s for EfficientNet-Lite0 on a CPU) and by its id after;
`check_given` holds an encoder built elsewhere (`Memory.use_encoder`) to the same id.

A memory made before weights files were named by their digest (`open_clip:MODEL@FILE`,
recorded by the file's path alone) has no digest to check the file against: the file is
taken as it is, once, said on stderr, and its digest recorded.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

from .encoders import Encoder, EncoderOptions, create_encoder
from .encoders.registry import former_weights_path, known_weights
from .errors import EncoderError, VismemError
from .store import Store

log = logging.getLogger("vismem")


def load(store: Store, location: str, options: EncoderOptions | None) -> Encoder:
    """The memory's encoder, built with `options` (device, runtime...: not its identity)."""
    identity = store.identity
    if identity.name is None:
        raise EncoderError(
            f"memory at {location} has no encoder: it stores precomputed vectors; "
            "add them with add_vectors / `vismem add-vectors`, and query it with vectors: "
            "classify_vectors / search, or `--queries Q.npy` on the command line")
    wanted, named_by_path = _wanted_id(store)
    known = known_weights(identity.name, identity.weights_path) if named_by_path is None else None
    if known is not None and identity.id is not None:
        # A changed weights file shows in its digest: refused here, before the model is
        # built only to be refused. Preprocessing is known only once built: the stored one.
        expected = _with_stored_preprocessing(known, identity.id)
        if expected != identity.id:
            raise _changed(store, expected)
    encoder = create_encoder(identity.name, weights=identity.weights_path, options=options)
    if encoder.id != wanted:
        raise _changed(store, encoder.id)
    if named_by_path is not None:
        _record_digest(store, location, encoder, named_by_path)
    return encoder


def check_given(store: Store, location: str, encoder: Encoder) -> None:
    """Refuse an encoder built elsewhere unless `load` would accept it (an older id of the
    same weights file: recorded anew, as `load` does)."""
    wanted, named_by_path = _wanted_id(store)
    if encoder.id != wanted:
        raise EncoderError(f"encoder {encoder.id} does not match this memory's {store.identity.id}")
    if named_by_path is not None:
        _record_digest(store, location, encoder, named_by_path)


def _wanted_id(store: Store) -> tuple[str | None, Path | None]:
    """The id an encoder of this memory must have, and the weights file it is taken to
    hold on trust (else None): the id stored, but where an older vismem named the weights
    file of `open_clip:MODEL@FILE` by its path alone, the id that file's digest gives now."""
    identity = store.identity
    if identity.id is None or identity.name is None:
        return identity.id, None
    former = former_weights_path(identity.name, identity.weights_path)  # (before hashing the file)
    if former is None or identity.id != _with_stored_preprocessing((former[0],), identity.id):
        return identity.id, None
    known = known_weights(identity.name, identity.weights_path)
    return (identity.id, None) if known is None else (_with_stored_preprocessing(known, identity.id), former[1])


def _record_digest(store: Store, location: str, encoder: Encoder, weights: Path) -> None:
    """Record `encoder`'s id, which holds the digest of the weights file an older vismem
    recorded by its path alone, so that from now on other weights saved over the file are
    refused as any changed weights are; said on stderr (the logger), as the file is taken
    on trust this once. A read-only memory records nothing; a failed write (another process
    holds the memory, a full disk) leaves the id as it was, to be recorded at a later open,
    and the memory works as if read-only had stopped it."""
    identity = store.identity
    taken = (f"{location}: this memory's encoder {identity.name} was recorded by its weights "
             f"file's path alone (an older vismem), so whether {weights} still holds the weights its "
             f"vectors came from cannot be checked: it is taken to, with digest {encoder.weights_id}")
    if store.read_only:
        log.warning("%s; the memory is read-only, so that digest is not recorded (this is said at each "
                    "open until it is opened writable)", taken)
        return
    try:
        store.record_encoder(dataclasses.replace(identity, id=encoder.id, config=encoder.describe()))
    except VismemError as exc:  # the memory still holds what it held: only the check waits
        log.warning("%s; that digest could not be recorded (%s): it will be at the next open", taken, exc)
        return
    log.warning("%s, now recorded: other weights saved over the file are refused from now on", taken)


def _changed(store: Store, now: str) -> EncoderError:
    identity = store.identity
    return EncoderError(
        f"encoder {identity.name} now has id {now}, but this memory was built with "
        f"{identity.id}: its weights or preprocessing changed, so new vectors would not be comparable")


def _with_stored_preprocessing(parts: Sequence[str], stored_id: str) -> str:
    """An encoder id of these first parts (a name and weights id, as `known_weights` gives
    them) and the preprocessing of `stored_id`'s: preprocessing is known only once built."""
    return ":".join((*parts, stored_id.rsplit(":", 1)[-1]))
