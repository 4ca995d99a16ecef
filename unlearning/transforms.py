"""A model's input transform (resize / center crop, everywhere the model sees data) and augmentation (training
steps only), as declared on the model (docs/inputs.md).

The input transform is torchvision's: `transforms.v2.Resize(resize)` (bilinear, antialiased) then
`transforms.v2.CenterCrop(center_crop)`, on the decoded image as a uint8 (or float) tensor [C, H, W]. A user's
pipeline that applies those two to the same decoded pixels gets the same model input. `resize` is an int
(the shorter side, aspect kept, as torchvision's) or [height, width]; `center_crop` an int or [height, width].

Augmentation runs on a training batch in pixel scale ([0, 1], before normalisation, as torchvision's
`RandomCrop(size, padding=4)` and `RandomHorizontalFlip()` run before `Normalize`), with a seeded generator,
so a resumed job draws the same crops. Evaluation, BatchNorm recomputation, saliency and masks never see it.

The declarations import no PyTorch (the API validates them, and the API process never loads torch); applying
them does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import Tensor

MAX_SIDE = 4096
CROP_PADDING = 4
AUGMENTATION_STEPS = {
    "random_crop": f"pad {CROP_PADDING} pixels of 0 on every side, then crop back to the input size at a random offset",
    "horizontal_flip": "mirror left-right with probability 1/2",
}
AUGMENTATION_PRESETS: dict[str, tuple[str, ...]] = {"none": (), "crop_flip": ("random_crop", "horizontal_flip")}


def _size(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class InputTransform:
    """`resize` and `center_crop` as declared: an int (resize: the shorter side; crop: a square) or (h, w)."""

    resize: int | tuple[int, int] | None = None
    center_crop: int | tuple[int, int] | None = None

    @classmethod
    def from_dict(cls, declared: dict[str, Any] | None) -> InputTransform | None:
        """The stored form ({"resize": 32} or {"resize": [h, w], "center_crop": 224}); None or {}: none."""
        if not declared:
            return None
        resize, crop = declared.get("resize"), declared.get("center_crop")
        return cls(*(v if v is None or isinstance(v, int) else _size(v) for v in (resize, crop)))

    def to_dict(self) -> dict[str, Any]:
        return {
            key: value if isinstance(value, int) else list(value)
            for key, value in (("resize", self.resize), ("center_crop", self.center_crop))
            if value is not None
        }

    def resized_size(self, stored: tuple[int, int] | None) -> tuple[int, int] | None:
        """(height, width) after the resize; None when it depends on each image (an int resize of images of
        any size)."""
        if isinstance(self.resize, tuple):
            return self.resize
        if self.resize is None or stored is None:
            return stored if self.resize is None else None
        short, long = min(stored), max(stored)
        other = int(self.resize * long / short)  # torchvision's rounding (truncation) for the longer side
        return (self.resize, other) if stored[0] <= stored[1] else (other, self.resize)

    def output_size(self, stored: tuple[int, int] | None = None) -> tuple[int, int]:
        """(height, width) of what the model sees. An int resize of images of unknown size (encoded, any size)
        is taken as square, and checked per image; ValueError when no size is fixed, or when the crop is
        larger than the resized image (torchvision would pad it with zeros)."""
        resized = self.resized_size(stored)
        if self.center_crop is None:
            if resized is None and isinstance(self.resize, int):
                return (self.resize, self.resize)
            if resized is None:
                raise ValueError("an input transform without resize or center_crop has no fixed size")
            return resized
        crop = _size(self.center_crop)
        if resized is not None and (crop[0] > resized[0] or crop[1] > resized[1]):
            raise ValueError(
                f"center_crop {crop[0]}x{crop[1]} is larger than the resized image, {resized[0]}x{resized[1]}"
            )
        return crop

    def __call__(self, images: Tensor, expected: tuple[int, int] | None = None) -> Tensor:
        """[N, C, H, W] or [C, H, W] images transformed; `expected`: the (height, width) every output must have.
        A crop larger than the resized image is refused (ValueError), not padded."""
        from torchvision.transforms.v2 import functional as tvf

        x = images
        if self.resize is not None:
            size = [self.resize] if isinstance(self.resize, int) else list(self.resize)
            x = tvf.resize(x, size, interpolation=tvf.InterpolationMode.BILINEAR, antialias=True)
        if self.center_crop is not None:
            crop = _size(self.center_crop)
            if crop[0] > x.shape[-2] or crop[1] > x.shape[-1]:
                raise ValueError(
                    f"an image of {images.shape[-2]}x{images.shape[-1]} resizes to "
                    f"{x.shape[-2]}x{x.shape[-1]}, smaller than center_crop {crop[0]}x{crop[1]}"
                )
            x = tvf.center_crop(x, list(crop))
        if expected is not None and tuple(x.shape[-2:]) != tuple(expected):
            raise ValueError(
                f"an image of {images.shape[-2]}x{images.shape[-1]} becomes {x.shape[-2]}x{x.shape[-1]} "
                f"under {self.to_dict()}, not {expected[0]}x{expected[1]}: declare a center_crop "
                "(or resize to [height, width]) so every image gets one size"
            )
        return x


def model_input_shape(stored_shape: Sequence[int | None], transform: InputTransform | None) -> tuple[int, int, int]:
    """(C, H, W) the model sees: a dataset's stored [C, H, W] (H, W None for encoded images of any size) after
    the input transform. ValueError when that fixes no size, or crops more than the resized image holds."""
    channels, height, width = stored_shape
    stored = None if height is None or width is None else (int(height), int(width))
    if transform is None:
        if stored is None:
            raise ValueError("images stored encoded have no common size: declare an input_transform with a size")
        return (int(channels), *stored)  # type: ignore[arg-type]
    return (int(channels), *transform.output_size(stored))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Augmentation:
    steps: tuple[str, ...]

    @classmethod
    def from_list(cls, steps: Sequence[str] | None) -> Augmentation | None:
        """The stored form (a list of step names); None or []: none."""
        if not steps:
            return None
        unknown = [s for s in steps if s not in AUGMENTATION_STEPS]
        if unknown:
            raise ValueError(f"unknown augmentation steps {unknown}: known are {sorted(AUGMENTATION_STEPS)}")
        return cls(tuple(steps))

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """A batch [N, C, H, W] of pixels in [0, 1], augmented per row; random draws from `generator` (CPU)."""
        for step in self.steps:
            x = _random_crop(x, generator) if step == "random_crop" else _horizontal_flip(x, generator)
        return x


def _random_crop(x: Tensor, generator: torch.Generator) -> Tensor:
    import torch

    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (CROP_PADDING,) * 4)
    dy = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device) + dy[:, None])[:, None, :, None]  # [N, 1, H, 1]
    cols = (torch.arange(w, device=x.device) + dx[:, None])[:, None, None, :]  # [N, 1, 1, W]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def _horizontal_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    import torch

    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(-1), x)
