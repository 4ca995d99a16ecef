"""A model's input transform is torchvision's, to the bit and to the predicted size; its augmentation is seeded
and reaches training batches only: never evaluation, BatchNorm recomputation, saliency or the mask."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from unlearning import ImageDataset, make_unlearning_data
from unlearning.base_methods import saliency_masks
from unlearning.curve import recompute_batchnorm
from unlearning.data import UnlearningData, batches, seeded_generator
from unlearning.mask import MaskConfig, compute_mask
from unlearning.metrics import accuracy
from unlearning.training import plain_batches, stratified_batches
from unlearning.transforms import CROP_PADDING, Augmentation, InputTransform, model_input_shape

CROP_FLIP = Augmentation.from_list(["random_crop", "horizontal_flip"])


# --- the input transform -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "declared",
    [
        {"resize": 16},
        {"resize": [12, 20]},
        {"center_crop": 9},
        {"resize": 16, "center_crop": [10, 14]},
        {"resize": 7, "center_crop": 7},
    ],
)
@pytest.mark.parametrize("stored", [(24, 24), (17, 31), (40, 19)])
def test_the_transform_is_torchvisions_on_the_decoded_image_and_its_size_is_predicted(
    declared: dict, stored: tuple
) -> None:
    """What a user's pipeline does (Pillow decode, v2.Resize then v2.CenterCrop on the uint8 tensor) gives the
    same pixels, and `output_size` names the size before any image is read."""
    pixels = torch.randint(0, 256, (*stored, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    image = Image.fromarray(pixels.numpy(), "RGB")
    steps = [v2.PILToTensor()]
    if "resize" in declared:
        steps.append(v2.Resize(declared["resize"], interpolation=v2.InterpolationMode.BILINEAR, antialias=True))
    if "center_crop" in declared:
        steps.append(v2.CenterCrop(declared["center_crop"]))
    theirs = v2.Compose(steps)(image)
    transform = InputTransform.from_dict(declared)
    ours = transform(pixels.permute(2, 0, 1).unsqueeze(0))[0]
    assert ours.dtype == torch.uint8 and torch.equal(ours, theirs)
    assert tuple(theirs.shape[1:]) == transform.output_size(stored) == model_input_shape([3, *stored], transform)[1:]
    assert InputTransform.from_dict(transform.to_dict()) == transform and transform.to_dict() == declared


def test_sizes_that_cannot_be_fixed_or_would_pad_are_refused() -> None:
    with pytest.raises(ValueError, match="no common size"):
        model_input_shape([3, None, None], None)  # encoded images of any size, no transform
    assert model_input_shape([3, None, None], InputTransform(resize=(20, 30))) == (3, 20, 30)
    assert model_input_shape([3, None, None], InputTransform(center_crop=24)) == (3, 24, 24)
    assert model_input_shape([1, None, None], InputTransform(resize=32)) == (1, 32, 32)  # checked per image
    with pytest.raises(ValueError, match="larger than the resized image"):
        model_input_shape([3, 28, 28], InputTransform(resize=20, center_crop=24))
    with pytest.raises(ValueError, match="smaller than center_crop"):  # torchvision would pad it with zeros
        InputTransform(center_crop=24)(torch.zeros(1, 3, 20, 40, dtype=torch.uint8))
    with pytest.raises(ValueError, match="declare a center_crop"):  # a non-square image under an int resize
        InputTransform(resize=16)(torch.zeros(1, 3, 20, 40, dtype=torch.uint8), expected=(16, 16))


# --- augmentation ----------------------------------------------------------------------------------------------


def test_augmentation_is_seeded_and_is_a_zero_padded_shift_and_a_coin_flip_per_row() -> None:
    x = torch.rand(64, 3, 10, 12, generator=torch.Generator().manual_seed(0)) + 1.0  # no zero anywhere
    first = CROP_FLIP(x, torch.Generator().manual_seed(5))
    assert torch.equal(first, CROP_FLIP(x, torch.Generator().manual_seed(5)))  # same seed, same crops and flips
    assert not torch.equal(first, CROP_FLIP(x, torch.Generator().manual_seed(6)))
    assert first.shape == x.shape
    padded = torch.nn.functional.pad(x, (CROP_PADDING,) * 4)
    flipped = 0
    for row, out in zip(padded, first, strict=True):
        windows = {
            (dy, dx, flip)
            for dy in range(2 * CROP_PADDING + 1)
            for dx in range(2 * CROP_PADDING + 1)
            for flip in (False, True)
            if torch.equal(out, (lambda w: w.flip(-1) if flip else w)(row[:, dy : dy + 10, dx : dx + 12]))
        }
        assert windows, "each row is a window of the zero-padded image, mirrored or not"
        flipped += all(flip for _, _, flip in windows)
    assert 16 < flipped < 48  # p = 1/2 over 64 rows
    assert (first == 0).any()  # the padding is zeros
    with pytest.raises(ValueError, match="unknown augmentation steps"):
        Augmentation.from_list(["random_crop", "cutmix"])
    assert Augmentation.from_list([]) is None


@pytest.fixture
def plain_and_augmented(digits: ImageDataset) -> tuple[UnlearningData, UnlearningData]:
    plain = make_unlearning_data(digits, channels=1, forget_classes=[3])
    augmented = make_unlearning_data(digits, channels=1, forget_classes=[3], augmentation=CROP_FLIP)
    assert augmented.adapter.augmentation == CROP_FLIP and plain.adapter.augmentation is None
    return plain, augmented


def test_training_batches_are_augmented_over_the_same_rows_and_replay_the_same(
    plain_and_augmented: tuple[UnlearningData, UnlearningData],
) -> None:
    plain, augmented = plain_and_augmented
    for make in (
        lambda d, g: plain_batches(d.retain, 64, d.adapter, g),
        lambda d, g: stratified_batches(d.retain, d.forget, 64, d.adapter, g),
    ):
        unchanged, changed = make(plain, seeded_generator(1)), make(augmented, seeded_generator(1))
        assert [tuple(map(torch.equal, a, b)) for a, b in zip(unchanged.rows, changed.rows, strict=True)] == [
            (True, True)
        ] * len(unchanged.rows)  # the same rows in the same batches
        pairs = list(zip(unchanged, changed, strict=True))
        assert all(torch.equal(a.labels, b.labels) and a.inputs.shape == b.inputs.shape for a, b in pairs)
        assert sum(not torch.equal(a.inputs, b.inputs) for a, b in pairs) == len(pairs)  # every batch augmented
        again = make(augmented, seeded_generator(1))  # a resumed epoch draws the same crops
        assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(changed, again, strict=True))


def test_evaluation_batchnorm_saliency_and_mask_never_see_the_augmentation(
    plain_and_augmented: tuple[UnlearningData, UnlearningData], original: torch.nn.Module
) -> None:
    plain, augmented = plain_and_augmented
    for a, b in zip(
        batches(plain.test, 100, plain.adapter), batches(augmented.test, 100, augmented.adapter), strict=True
    ):
        assert torch.equal(a[0], b[0])
    assert accuracy(original, plain.test, plain.adapter) == accuracy(original, augmented.test, augmented.adapter)
    states = []
    for data in (plain, augmented):
        model = copy.deepcopy(original)
        recompute_batchnorm(model, data.retain, data.adapter)
        states.append(model.state_dict())
    bn = [k for k in states[0] if "running" in k]
    assert bn and all(torch.equal(states[0][k], states[1][k]) for k in bn)
    masks = [saliency_masks(copy.deepcopy(original), data, 0.5, 128) for data in (plain, augmented)]
    assert all(torch.equal(a, b) for a, b in zip(masks[0].values(), masks[1].values(), strict=True))
    kept = [
        compute_mask(copy.deepcopy(original), d.retain, d.forget, d.adapter, MaskConfig(), 128).trainable
        for d in (plain, augmented)
    ]
    assert kept[0].keys() == kept[1].keys() and all(torch.equal(kept[0][k], kept[1][k]) for k in kept[0])
