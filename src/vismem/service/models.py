"""What the API takes and answers, as types: the OpenAPI document is written from them.

Constraints live in the types (an id fits SQLite's INTEGER, a label has a visible
character, a `where` pair names a metadata key), so a request that matches the
document is one the memory accepts. Vote options take their help, default and limits
from `VoteParams` (`settings.describe`), never restated here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Annotated, Any, Callable, ClassVar, Literal, cast

from fastapi import Form
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints,
                      model_serializer, model_validator)

from ..calibrate import Calibration
from ..counterfactual import NearestItem
from ..decide import VOTES, Neighbor, VoteParams
from ..prune import PruneSettings
from ..search.quality import Quality
from ..search.tuning import RecallEstimate
from ..settings import describe
from ..store.base import (CONTROL, CONTROLS, MAX_LABEL_LENGTH, MAX_WEIGHT, check_label, check_meta, check_source,
                          parse_pairs)
from ..store.checkpoints import NAME as CHECKPOINT_NAME
from ..store.checkpoints import NAME_RULE, RollbackReport
from ..transform import TransformSpec

# Ids are SQLite INTEGERs (< 2**63) handed out from 1 up; the API keeps to the ones a JSON
# number carries exactly everywhere (JavaScript's safe integers), so a larger one is a 422.
MAX_ID = 2**53 - 1
# A label needs a character that is not a space to Python's str.strip (what `check_label`
# asks). Regex engines disagree on what \s is, so the spaces are named one by one.
SPACES = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
VISIBLE = f"[^{SPACES}]"
# A whole number sent as text (a path, a query, a form field) is digits: pydantic would read
# "1.0", " 1" and "+1" as 1, and "1_0" as 10. A minus sign too, so -1 is told its range.
WHOLE = re.compile(r"-?[0-9]+")


def not_whole(text: str) -> str | None:
    """Why `text` is not a whole number written as one; None when it is."""
    if WHOLE.fullmatch(text):
        return None
    return f"expected a whole number written in digits (e.g. 12), got {text[:80]!r}"


def _whole_text(value: Any) -> Any:
    if isinstance(value, str) and (why := not_whole(value)):
        raise ValueError(why)
    return value


ItemId = Annotated[int, BeforeValidator(_whole_text), Field(ge=0, le=MAX_ID, description="An item id.")]
# In a JSON body (strict: true is not 1, nor "2" the number 2), where 2.0 is the integer 2.
JsonItemId = Annotated[int, Field(ge=0, le=MAX_ID, description="An item id."),
                       BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_LENGTH, pattern=VISIBLE)]


def _printable(check: Callable[[str], Any]) -> BeforeValidator:
    """The store's own check, so the 422 names the text, escaped, as the CLI does."""
    def validate(value: Any) -> Any:
        if isinstance(value, str) and CONTROL.search(value):
            check(value)
        return value
    return BeforeValidator(validate)


# A label written to the memory holds no control character either (`check_label`); a label
# looked for is any Label, so one a memory kept from before that check is still found.
NEW_LABEL = f"^[^{CONTROLS}]*[^{SPACES}{CONTROLS}][^{CONTROLS}]*$"
NewLabel = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_LENGTH, pattern=NEW_LABEL),
                     _printable(check_label)]
Source = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_LENGTH)]
# So is a source written (a restriction may name any Source, one kept from before)
NewSource = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_LENGTH, pattern=f"^[^{CONTROLS}]+$"),
                      _printable(check_source)]
WHERE_KEY = r"^[A-Za-z0-9_]*[A-Za-z0-9][A-Za-z0-9_]*="
WherePair = Annotated[str, StringConstraints(pattern=WHERE_KEY, max_length=500)]


def _storable(pair: str) -> str:
    check_meta(parse_pairs([pair], "meta") or {})
    return pair


# And metadata written; a VALUE read as JSON ("a\u001bb") may hold one the pattern cannot see.
META_PAIR = f"{WHERE_KEY}[^{CONTROLS}]*$"
MetaPair = Annotated[str, StringConstraints(pattern=META_PAIR, max_length=500), _printable(_storable),
                     AfterValidator(_storable)]
# Bounds that keep the longest schema-valid query string (each character percent-encoded)
# well under the HTTP layer's limit (MAX_REQUEST_HEAD), so it is answered, not cut off.
MAX_VALUES = 20  # values of one repeatable restriction
MAX_IDS = 10_000  # ids in one request
MAX_REQUEST_HEAD = 2**20
CHECKPOINT_PATTERN = f"^{CHECKPOINT_NAME.pattern}$"
CheckpointName = Annotated[str, StringConstraints(pattern=CHECKPOINT_PATTERN),
                          Field(description=f"A checkpoint's name: {NAME_RULE}.")]
# What each pattern asks, in words: a 422 says this, not the regular expression
PATTERN_RULES = {
    VISIBLE: "needs a character that is not a space",
    NEW_LABEL: "needs a character that is not a space",  # (a control character is named before the pattern)
    WHERE_KEY: "expected KEY=VALUE, the KEY of letters, digits and _ (e.g. camera=phone)",
    META_PAIR: "expected KEY=VALUE, the KEY of letters, digits and _ (e.g. camera=phone)",
    CHECKPOINT_PATTERN: f"a checkpoint's name is {NAME_RULE}",
}
VoteName = Literal[VOTES]  # type: ignore[valid-type]
WHERE_HELP = ("KEY=VALUE: only items whose metadata KEY equals VALUE (repeat for more; all must hold). "
              "VALUE is read as JSON when it parses (2024, true), else as text.")


def vote_form(name: str) -> Any:
    """A form field for a vote option: help, shipped default and limits from `VoteParams`;
    absent means the memory's stored default."""
    found = describe(VoteParams, name)
    limits = {"ge": found.get("min"), "le": found.get("max"), "gt": found.get("min_exclusive")}
    options: dict[str, Any] = {key: value for key, value in limits.items() if value is not None}
    if found.get("finite"):
        options["allow_inf_nan"] = False
    return Form(None, description=f"{found['help']} [memory default; shipped: {found['default']}]", **options)


def restriction_forms() -> dict[str, Any]:
    """The restriction fields of /classify and /search: the CLI's --only-label,
    --only-source and --where, repeatable."""
    return {
        "only_label": Form(None, max_length=MAX_VALUES, description="Only items with this label (repeat for more)."),
        "only_source": Form(None, max_length=MAX_VALUES, description="Only items from this source (repeat for more)."),
        "where": Form(None, max_length=MAX_VALUES, description=WHERE_HELP),
    }


# ---- requests ------------------------------------------------------------------------


def _one_of_label_weight(schema: dict[str, Any]) -> None:
    # Absent is "no change"; null is not a value either field takes.
    for field in schema["properties"].values():
        field.pop("default", None)
    schema["anyOf"] = [{"required": ["label"]}, {"required": ["weight"]}]


class ItemChange(BaseModel):
    """A change to one item: a new label, a new vote weight, or both (the CLI's relabel,
    block, boost, unblock)."""

    # strict: JSON's true is not the id 1, nor "2" the weight 2.0
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_one_of_label_weight)
    label: NewLabel = Field(None, description="The new label (no re-encoding).")  # type: ignore[assignment]
    weight: float = Field(None, ge=0, le=MAX_WEIGHT, allow_inf_nan=False,  # type: ignore[assignment]
                          description="The vote weight: 0 blocks, 1 is normal, >1 boosts.")

    @model_validator(mode="after")
    def _something(self) -> ItemChange:
        if self.label is None and self.weight is None:
            raise ValueError("send a new label, a weight, or both")
        return self


class ItemsChange(ItemChange):
    """The same change to several items, in one transaction."""

    ids: list[JsonItemId] = Field(..., min_length=1, max_length=MAX_IDS, description="The items to change.",
                              examples=[[1, 2]])


class Selector(BaseModel):
    """Which items DELETE /items removes: exactly one of the CLI's --id, --label,
    --source, --where (repeatable ones as repeated query parameters)."""

    model_config = ConfigDict(extra="forbid")
    id: list[ItemId] | None = Field(None, min_length=1, max_length=MAX_IDS)
    label: Label | None = None
    source: Source | None = None
    where: list[WherePair] | None = Field(None, min_length=1, max_length=MAX_VALUES)

    @model_validator(mode="after")
    def _exactly_one(self) -> Selector:
        if sum(value is not None for value in (self.id, self.label, self.source, self.where)) != 1:
            raise ValueError("give exactly one of id (repeatable), label, source, where (repeatable)")
        return self

    @classmethod
    def openapi_parameter(cls) -> dict[str, Any]:
        """The selector as one exploded query object that must hold exactly one of its
        fields: `?label=cat`, `?id=1&id=2`, `?where=camera=phone`."""
        choices = [{"type": "object", "properties": {name: non_null(field)}, "required": [name],
                    "additionalProperties": False}
                   for name, field in cls.model_json_schema()["properties"].items()]
        return {"name": "selector", "in": "query", "required": True, "style": "form", "explode": True,
                "description": " ".join((cls.__doc__ or "").split()),
                "schema": {"oneOf": choices}}


# ---- answers -------------------------------------------------------------------------


class ItemOut(BaseModel):
    """One exemplar's metadata (its vector stays in the memory)."""

    id: int
    label: str
    source: str
    path: str | None = Field(description="Where the image was read from; null for uploads and vectors.")
    content_hash: str | None
    weight: float
    meta: dict[str, Any]
    added_at: float
    relabelled_from: str | None
    prune_count: int


class PageOut(BaseModel):
    """A page of the listing: `total` items match; these start at `offset`, oldest first."""

    total: int
    offset: int
    items: list[ItemOut]


class HitOut(BaseModel):
    id: int
    label: str
    source: str
    distance: float


class SearchOut(BaseModel):
    """What `vismem search --json` prints for one image."""

    path: str | None = Field(description="The uploaded image's file name; null for a `vector` query.")
    neighbors: list[HitOut]


class SkippedOut(BaseModel):
    path: str
    reason: str


class AddOut(BaseModel):
    """New ids, and every image not added with why (duplicate, conflicting label, unreadable)."""

    added: int
    ids: list[int]
    skipped: int
    conflicts: int = Field(description="Of those skipped, images the memory holds under another label "
                                       "(not added: relabel the item holding one if the new label is right).")
    skipped_items: list[SkippedOut]
    items: int = Field(description="The items the memory holds now, as `vismem add --json` says.")


# An edit that committed, then could not finish a step after it (`PartlyDoneError`): it
# answers what it committed, as partial success is answered elsewhere (`missing`), and this.
Unfinished = Annotated[str | None, Field(description=(
    "null when the edit is done whole. Else it is committed (the rest of this answer says what) but a "
    "step after it was not done, and this says what stays and how to finish it: e.g. the removed items "
    "are gone from every search, but a stopped process held the saved index, so their bytes stay in its "
    "files until `vismem compact`."))]


class RemovedOut(BaseModel):
    """Removed ids (durable, and purged from disk unless `unfinished` says otherwise, when
    this answers); ids asked for that did not exist; items left."""

    removed: int
    ids: list[int]
    missing: list[int]
    items: int
    unfinished: Unfinished = None
    purge: Literal["requested"] | None = Field(None, description=(
        "Only on a memory in Milvus, which deletes logically: \"requested\", the removed items' bytes leave "
        "the server's storage when it compacts and garbage-collects (asked for now), as `remove --json` says."))

    @model_serializer(mode="wrap")
    def _purge_only_when_requested(self, handler: Any) -> dict[str, Any]:
        # (absent on a directory memory, as `remove --json` prints it, not null)
        answer = handler(self)
        if answer.get("purge") is None:
            answer.pop("purge", None)
        return cast(dict[str, Any], answer)


@dataclass(frozen=True)
class RollbackOut(RollbackReport):
    """What `rollback --json` prints, and `unfinished` (the items removed are purged
    unless it says otherwise)."""

    unfinished: Unfinished = None


class CheckpointIn(BaseModel):
    """A checkpoint to make: `vismem checkpoint MEMDIR NAME [--replace]`."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: JSON's 0 is not false
    name: CheckpointName
    replace: bool = Field(False, description="Replace the checkpoint of that name, if there is one.")


class UpdatedOut(BaseModel):
    """Changed ids; ids asked for that did not exist; the label and weight set (as `vismem
    relabel` / `block` / `boost` / `unblock --json` say them)."""

    updated: int
    ids: list[int]
    missing: list[int]
    label: str | None = Field(description="The label the items have now; null where this change leaves it.")
    weight: float | None = Field(description="The vote weight the items have now; null where this change "
                                             "leaves it.")
    reset_prune_counts: int = Field(description="Items the relabel un-pruned: given another label, their "
                                                "pruning count v is reset to 0 (0 where only the weight "
                                                "changes).")


class DeletedOut(BaseModel):
    """The checkpoint deleted."""

    deleted: CheckpointName


class BatchesOut(BaseModel):
    """Forward passes of the encoder since the server started, and the images in them."""

    batches: int
    images: int
    largest_batch: int
    mean_batch: float


class HealthOut(BaseModel):
    """Liveness, access mode and encoder batching so far."""

    status: Literal["ok"]
    read_only: bool = Field(description="Started without a token: every edit answers 403.")
    protect_reads: bool = Field(description="Reading endpoints need the token too.")
    encoder_batches: BatchesOut | None = Field(description="null for a memory without an encoder.")


class CounterfactualOut(BaseModel):
    """What would change the decision (`vismem classify --counterfactual`)."""

    label: str | None
    remove: list[int] | None = Field(description="The fewest item ids whose removal changes the label; null "
                                                 "when no set of at most `max_removals` does.")
    label_after_remove: str | None
    block: list[int] | None = Field(description="The same for blocking (weight 0).")
    label_after_block: str | None
    runner_up: NearestItem | None = Field(description="The nearest item of the best-scoring other class.")
    exact: bool = Field(description="Both sets are proved smallest.")
    candidates: int
    max_removals: int
    summary: str


class DecisionOut(BaseModel):
    """What `vismem classify --json` prints for one image: the label, each class's score,
    and every neighbour's vote."""

    path: str | None = Field(description="The uploaded image's file name; null for a `vector` query.")
    label: str | None = Field(description="null when the memory abstains.")
    confidence: float
    abstained: bool
    ood_score: float | None = Field(description="With `abstain`: how unlike the memory the image is.")
    threshold: float | None = Field(description="With `abstain`: the score above which it abstains.")
    scores: dict[str, float]
    neighbors: list[Neighbor]
    prototypes: dict[str, float] = Field(description="Cosine distance to each class's nearest prototype, nearest "
                                                     "first.")
    interventions: list[str] = Field(description="Every edit that changed this decision, in words.")
    vote: VoteName
    k: int
    k_used: int = Field(description="How many neighbours voted: k, or fewer when the memory (or the part of it "
                                    "that the restriction lets vote) holds fewer items.")
    alpha: float
    tau: float
    mix: float
    counterfactual: CounterfactualOut | None = Field(None, description="Only with ?counterfactual=true.")


def absent(description: str) -> Any:
    """A field that some answers leave out (never null where it is there): not required,
    and no `default` in the document, which would read as null."""
    return Field(None, description=description, json_schema_extra=_no_default)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


IndexParam = int | float | bool | str | None


# The answer holds every field of these records, defaulted or not: required in the document
ANSWERED = ConfigDict(json_schema_serialization_defaults_required=True)


@dataclass(frozen=True)
class QualityOut(Quality):
    """Recall@k of a `type` index, measured with `sample` queries on `size` items, with the
    search `params` it chose, the 95% interval [`low`, `high`], what the queries were
    (`measured_on`) and the memory's local intrinsic dimension `lid`."""

    __pydantic_config__: ClassVar[ConfigDict] = ANSWERED
    params: dict[str, IndexParam]


@dataclass(frozen=True)
class TransformSpecOut(TransformSpec):
    """What the transform fits: its kind and settings."""

    __pydantic_config__: ClassVar[ConfigDict] = ANSWERED


@dataclass(frozen=True)
class VoteDefaultsOut(VoteParams):
    """The vote options a classify uses when it names none."""

    __pydantic_config__: ClassVar[ConfigDict] = ANSWERED


class IndexOut(BaseModel):
    """The index: size, parameters, the setting, the last measured recall (with what it was
    measured on) and the running recall of fresh adds. A Milvus memory's holds what its
    server tells: no rows, target_recall, float16 or fresh_adds, and null for the rest it
    does not say."""

    type: str = Field(description="exact, hnsw or ivfpq (on Milvus its own name: FLAT, HNSW, IVF_PQ).")
    size: int = Field(description="Items in the index.")
    rows: int = absent("Slots held: items, and removed ones until `vismem compact` reclaims them.")
    tombstones: int | None = Field(description="Removed items whose slots are not reclaimed yet.")
    bytes: int | None = Field(description="Memory the index holds.")
    bytes_per_vector: float | None
    params: dict[str, IndexParam] = Field(description="Build and search parameters, by index type.")
    setting: str = Field(description="The memory's index setting: auto, exact, hnsw or ivfpq.")
    target_recall: float = absent("Recall@10 an approximate index tunes its search effort to reach.")
    float16: bool = absent("Vectors held as float16.")
    quality: QualityOut | None = Field(description="The last measured recall; null before one is measured.")
    fresh_adds: RecallEstimate | None = absent("The running recall of items added since, at the current "
                                               "effort; null before any were measured.")
    warning: str | None = Field(description="Why recall is below target and what to do; null when it is not.")


class TransformOut(BaseModel):
    """The fitted feature transform (`name` none: vectors are searched as stored), and for a
    fitted one how far the memory moved since it was fitted."""

    name: str
    spec: TransformSpecOut
    fitted_items: int
    out_dim: int
    fingerprint: str
    max_id: int | None = Field(description="The newest item id when it was fitted.")
    changed_since: float | None = absent("Fitted only: the share of items added or removed since (null: "
                                         "fitted before this was recorded).")
    mean_drift: float = absent("Fitted only: the shift of the mean since, in units of the fitted items' spread.")
    retune: bool = absent("Fitted only: the memory moved enough that fitting it again is advised.")


class IntrinsicDimOut(BaseModel):
    """The last intrinsic-dimension estimate and the items it was made on."""

    value: float
    items: int = Field(description="Items in the memory when it was made.")
    removed_since: int | None = Field(description="Of those, removed since (null: not recorded).")
    added_since: int | None = Field(description="Items added since (null: not recorded).")


@dataclass(frozen=True)
class PruningOut(PruneSettings):
    """The pruning settings, and how many items they keep from voting now."""

    __pydantic_config__: ClassVar[ConfigDict] = ANSWERED
    excluded: int = dataclass_field(kw_only=True)


@dataclass(frozen=True)
class AbstainOut(Calibration):
    """The calibration, the share of voting items added or removed since (null: not
    recorded when it was made), and whether it was measured through another feature
    transform than the one in force (then `/classify` with `abstain` refuses it)."""

    __pydantic_config__: ClassVar[ConfigDict] = ANSWERED
    changed_since: float | None = dataclass_field(kw_only=True)
    transform_changed: bool = dataclass_field(kw_only=True)


class CheckpointsOut(BaseModel):
    """The memory's checkpoints: how many, and the item rows they hold."""

    count: int
    item_rows: int = Field(description="One per item of each checkpoint still in the memory.")


class InfoOut(BaseModel):
    """What `vismem info --json` prints. The store adds its own fields: those of a
    directory memory (`recorded_queries`, `recorded_waiting`) and of a Milvus one (`server_version`,
    `consistency`, `storage`) are named here, and another store may add others."""

    path: str
    items: int
    classes: dict[str, int]
    class_count: int
    encoder: str | None
    encoder_id: str | None
    dim: int
    home: str = Field(description="Where the memory lives: embedded (a directory) or milvus.")
    location: str
    format_version: int
    read_only: bool
    index: IndexOut
    transform: TransformOut | None = Field(description="null for a store without feature transforms (Milvus).")
    recorded_queries: int = absent("A directory memory: recorded queries the database keeps, for tuning the "
                                   "index (what `vismem tune-index` beside the server tunes on).")
    recorded_waiting: int = absent("A directory memory: queries recorded by this process and waiting in its RAM, "
                                   "not yet in the database (`vismem serve` writes them every "
                                   "--record-write-seconds and as it stops). Not added to `recorded_queries`: "
                                   "the database keeps a uniform sample of at most `record-queries` KEEP of all.")
    disk_bytes: int | None = Field(description="Bytes on disk; null where the server holds them.")
    thumbnails: bool = Field(description="Whether the store keeps thumbnails.")
    server_version: str = absent("A Milvus memory: the server's version.")
    consistency: str = absent("A Milvus memory: the consistency level of its reads.")
    storage: str = absent("A Milvus memory: where its bytes are, and when removed ones leave.")
    intrinsic_dim: float | None
    intrinsic_dim_estimate: IntrinsicDimOut | None
    defaults: VoteDefaultsOut = Field(description="The vote options a classify uses when it names none.")
    prototypes_per_class: int
    pruning: PruningOut
    abstain: AbstainOut | None = Field(description="The calibration; null before `vismem calibrate`.")
    checkpoints: CheckpointsOut | None = Field(description="null for a store without checkpoints (Milvus).")


def non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field's schema without its `null` branch: on the wire an absent field
    is left out, never sent as null."""
    branches = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(branches) == 1:
        rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
        return {**rest, **branches[0]}
    return schema
