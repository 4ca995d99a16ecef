"""Per-sample membership scores (unlearning/membership.py): offline LiRA against shadow models."""

import copy

import pytest
import torch
from torch import nn

from unlearning import make_unlearning_data, train_classifier
from unlearning.architectures import seeded_init
from unlearning.config import ConfigError, resolve_config
from unlearning.data import Subset, UnlearningData
from unlearning.membership import lira_scores, membership_scores, shadow_rows, train_shadow_models


@pytest.fixture(scope="module")
def random_tenth(digits) -> UnlearningData:
    """A random 10% forget set whose rows, and every test row, carry seeded random wrong labels: canaries. A
    model can score high on a canary's label only by having learned that very row (digits generalise too well
    for true labels to tell members apart), so the attack's signal is unambiguous."""
    n = len(digits.train_labels)
    data = make_unlearning_data(
        digits, channels=1, forget_indices=torch.randperm(n, generator=torch.Generator().manual_seed(1))[: n // 10]
    )

    def canaries(subset: Subset, seed: int) -> Subset:
        shift = torch.randint(1, 10, (len(subset),), generator=torch.Generator().manual_seed(seed))
        return Subset(subset.inputs, (subset.labels + shift) % 10, subset.ids, subset.device)

    return UnlearningData(data.retain, canaries(data.forget, 2), canaries(data.test, 3), 10, data.adapter)


@pytest.fixture(scope="module")
def shadows(_trained_cnn, random_tenth) -> list[nn.Module]:
    return train_shadow_models(_trained_cnn, random_tenth.retain, random_tenth.adapter, count=4, epochs=10, seed=0)


def _memorised(data: UnlearningData) -> nn.Module:
    """A cnn-small trained on retain rows and the canaries together, long enough to learn many canaries by heart."""
    both = Subset(
        torch.cat([data.retain.inputs, data.forget.inputs]),
        torch.cat([data.retain.labels, data.forget.labels]),
        torch.cat([data.retain.ids, data.forget.ids]),
    )
    model = seeded_init("cnn-small", 10, (1, 8, 8), seed=1)
    return train_classifier(model, both, data.adapter, epochs=40, lr=0.05, seed=1).eval()


def test_a_model_that_learned_the_forget_rows_by_heart_is_exposed_and_one_that_never_saw_them_is_not(
    _trained_cnn,
    random_tenth,
    shadows,
) -> None:
    data = random_tenth
    exposed = membership_scores(_memorised(data), shadows, data.forget, data.test, data.adapter).summary()
    never = seeded_init("cnn-small", 10, (1, 8, 8), seed=1)
    never = train_classifier(never, data.retain, data.adapter, epochs=20, lr=0.05, seed=1).eval()
    unseen = membership_scores(never, shadows, data.forget, data.test, data.adapter).summary()
    print("memorised", exposed, "never saw", unseen)
    assert exposed["exposed_share"] >= 0.3 and exposed["forget"]["worst_decile"] > exposed["test"]["worst_decile"]
    assert unseen["exposed_share"] <= 0.15  # 0.05 expected: a forget row is a row it never saw
    assert exposed["rows"] == {"forget": len(data.forget), "test": len(data.test)} and exposed["shadow_models"] == 4


def test_shadows_train_on_seeded_halves_of_the_retain_rows_only(random_tenth) -> None:
    data = random_tenth
    halves = [shadow_rows(len(data.retain), seed=0, index=i) for i in range(3)]
    assert all(len(h) == len(data.retain) // 2 and len(set(h.tolist())) == len(h) for h in halves)
    assert not torch.equal(halves[0], halves[1])  # each shadow its own half
    assert torch.equal(halves[2], shadow_rows(len(data.retain), seed=0, index=2))  # repeatable
    trained_on = {int(i) for h in halves for i in data.retain.ids[h]}
    assert not trained_on & {int(i) for i in data.forget.ids}  # never a forget row (test rows are another split)


def test_scores_repeat_for_a_seed(_trained_cnn, random_tenth, shadows) -> None:
    data = random_tenth
    again = train_shadow_models(_trained_cnn, data.retain, data.adapter, count=4, epochs=10, seed=0)
    first = membership_scores(_trained_cnn, shadows, data.forget, data.test, data.adapter)
    second = membership_scores(_trained_cnn, again, data.forget, data.test, data.adapter)
    assert torch.allclose(first.forget, second.forget) and torch.allclose(first.test, second.test)


def test_few_shadows_share_one_spread_and_many_have_their_own() -> None:
    target = torch.tensor([1.0, 1.0], dtype=torch.float64)
    # Row 0's shadows agree closely, row 1's vary: per row, row 0 is far more exposed.
    shadows = torch.tensor([[0.0, -2.0], [0.1, 2.0]] * 4, dtype=torch.float64)
    per_row = lira_scores(target, shadows)
    assert per_row[0] > 10 * per_row[1]
    pooled = lira_scores(target, shadows[:4])  # fewer than 8: one pooled spread
    spread = (shadows[:4] - shadows[:4].mean(0)).pow(2).mean().sqrt()
    assert torch.allclose(pooled, (target - shadows[:4].mean(0)) / spread)


def test_shadows_train_from_a_frozen_model_and_one_shadow_is_refused(_trained_cnn, random_tenth) -> None:
    """The published point is a copy of a curve's working model, whose parameters are frozen."""
    frozen = copy.deepcopy(_trained_cnn).requires_grad_(False)
    (shadow,) = train_shadow_models(frozen, random_tenth.retain, random_tenth.adapter, count=1, epochs=1)
    assert not torch.equal(next(shadow.parameters()), next(frozen.parameters()))  # trained from a fresh start
    with pytest.raises(ConfigError, match="at least 2"):
        resolve_config({"evidence": {"shadow_models": 1}}, "rl")
