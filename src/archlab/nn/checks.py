"""Input checks shared by models: one clear error instead of a crash deep inside."""

from __future__ import annotations

from torch import Tensor

from archlab.errors import expect


def check_token_ids(name: str, ids: Tensor, limit: int, what: str = "the vocabulary size") -> None:
    """``ids`` must be a (batch, time) integer tensor with values in [0, limit)."""
    expect(
        ids.dim() == 2 and not ids.is_floating_point() and not ids.is_complex(),
        f"{name} must be an integer tensor of shape (batch, time), got "
        f"{ids.dtype} of shape {tuple(ids.shape)}",
    )
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        expect(
            lo >= 0 and hi < limit,
            f"{name} must lie in [0, {limit}) ({what}), found {lo if lo < 0 else hi}",
        )


def check_images(images: Tensor, channels: int, size: int) -> None:
    """``images`` must be a float tensor of shape (batch, channels, size, size)."""
    expect(
        images.dim() == 4
        and images.is_floating_point()
        and tuple(images.shape[1:]) == (channels, size, size),
        f"images must be a float tensor of shape (batch, {channels}, {size}, {size}), got "
        f"{images.dtype} of shape {tuple(images.shape)}",
    )
