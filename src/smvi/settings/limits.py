"""Upper bounds on every size a user sets (torch-free), checked when settings are validated, before anything is
allocated: each names its limit and why. They sit far above any setting smvi's studies use; a value past one is a
typo or would exhaust memory (or, for seeds, overflow the 64-bit generators) long before it could finish.

Use as ``Annotated[int, limits.LATENT]``: the names below are the validators.
"""

from __future__ import annotations

from typing import Any

from pydantic import AfterValidator

__all__ = [
    "BATCH",
    "CHAINS",
    "COLUMNS",
    "EACH_IMAGES",
    "EACH_SEED",
    "EACH_STEPS",
    "EPOCHS",
    "FLOW_LAYERS",
    "IMAGES",
    "JOBS",
    "LATENT",
    "PICTURES",
    "SAMPLES",
    "SEED",
    "STEPS",
    "TARGET",
    "TRAIN_DRAWS",
    "WEIGHT",
    "WIDTH",
    "at_most",
    "each_at_most",
    "show",
]


def show(x: float) -> str:
    """A limit or value as people write it: 2^62, 4096, 1e+06, 3.5."""
    if isinstance(x, int) and x > 2**20 and x & (x - 1) == 0:
        return f"2^{x.bit_length() - 1}"
    if isinstance(x, int) and abs(x) < 10**15:
        return str(x)
    return f"{x:g}"


def at_most(limit: float, why: str) -> AfterValidator:
    """A validator refusing values above ``limit`` with a message naming it and ``why`` (None passes)."""

    def check(v: Any) -> Any:
        if v is not None and v > limit:
            raise ValueError(f"must be at most {show(limit)} ({why}), got {show(v)}")
        return v

    return AfterValidator(check)


def each_at_most(limit: float, why: str, *, count: int | None = None, what: str = "values") -> AfterValidator:
    """A validator for a tuple: every value at most ``limit`` and (``count``) at most ``count`` values."""

    def check(v: Any) -> Any:
        if v is None:
            return v
        if count is not None and len(v) > count:
            raise ValueError(f"at most {count} {what} ({why}), got {len(v)}")
        big = [x for x in v if x > limit]
        if big:
            raise ValueError(f"every value must be at most {show(limit)} ({why}), got {show(big[0])}")
        return v

    return AfterValidator(check)


# the limits, with why: a value past one would exhaust memory, or overflow, long before it could finish
SEED = at_most(2**62, "seeds feed 64-bit torch and numpy generators, with room for the offsets smvi adds")
WIDTH = each_at_most(65536, "a layer that wide needs gigabytes per weight matrix", count=64, what="layers")
LATENT = at_most(4096, "memory: the full-covariance q stores z_dim² numbers per image, the flow's layers grow with it")
FLOW_LAYERS = at_most(256, "memory and time: every coupling layer is a network of its own")
SAMPLES = at_most(1_000_000, "memory and time: samples per image are drawn in batches of images")
IMAGES = at_most(10_000_000, "more images than any data set smvi loads; the split's own size is checked too")
EACH_IMAGES = each_at_most(10_000_000, "more images than any data set smvi loads", count=1000, what="sizes")
EACH_SEED = each_at_most(2**62, "seeds feed 64-bit generators; each seed is a repetition", count=10_000, what="seeds")
BATCH = at_most(1_000_000, "memory: a batch's inputs, activations and samples are held at once")
STEPS = at_most(10_000_000, "time: at least a forward pass per step")
EACH_STEPS = each_at_most(10_000_000, "time: at least a forward pass per step", count=64, what="lengths")
CHAINS = at_most(100_000, "memory: AIS holds every chain of every image of a batch at once")
EPOCHS = at_most(1_000_000, "time: a pass over the training set each")
PICTURES = at_most(4096, "memory: the picture is one image grid, and its PNG grows with it")
COLUMNS = at_most(256, "a grid row wider than any screen or page")
WEIGHT = at_most(1e6, "a weight that large makes every step's loss overflow or the objective meaningless")
TARGET = at_most(
    1e6,
    "D_SM and gap estimates of image models are far below a million; a larger bound never binds "
    "and the report could not draw it",
)
TRAIN_DRAWS = (
    2**22
)  # train.batch_size × samples per image: decoded images held at once (784 pixels and activations each)
JOBS = at_most(1024, "threads: more than any machine has cores")
