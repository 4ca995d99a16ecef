"""sklearn's digits as the service takes them: one shard, a manifest and a trained cnn-small's weights.

What the demo uploads, and what the end-to-end tests and benchmarks use. Sample ids are `d<row>` and each
sample's subject is one of 40 writers, `w<row % 40>`: the 1,797 digits are split into train and test as
`unlearning.load_digits_dataset` splits them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DigitsUpload:
    manifest: bytes  # CSV: sample_id,split,shard,row,subject_id
    shard: bytes  # safetensors with `inputs` (uint8 [N, 1, 8, 8]) and `labels`
    weights: bytes  # safetensors state_dict of a cnn-small trained on the train split
    train_labels: list[int]
    input_shape: tuple[int, ...]

    SHARD_NAME = "digits.safetensors"
    PREPROCESSING = "unit"  # the model was trained on pixels scaled to [0, 1], nothing else

    def model_form(self, dataset_id: str, name: str = "digits-cnn") -> dict[str, str]:
        """The form fields of `POST /v1/models` (the weights go as the file `weights`)."""
        return {
            "name": name,
            "architecture": "cnn-small",
            "num_classes": "10",
            "dataset_id": dataset_id,
            "preprocessing": self.PREPROCESSING,
        }

    def files(self) -> list[tuple[str, tuple[str, bytes]]]:
        """The multipart files of `POST /v1/datasets`."""
        return [("manifest", ("manifest.csv", self.manifest)), ("shards", (self.SHARD_NAME, self.shard))]


def digits_manifest(n_train: int, n_rows: int, shard: str = DigitsUpload.SHARD_NAME) -> bytes:
    """The manifest of rows 0..n_rows-1 of one shard: the first n_train are the train split."""
    lines = ["sample_id,split,shard,row,subject_id"]
    lines += [f"d{row},{'train' if row < n_train else 'test'},{shard},{row},w{row % 40}" for row in range(n_rows)]
    return ("\n".join(lines) + "\n").encode()


def digits_upload(epochs: int = 20, seed: int = 0) -> DigitsUpload:
    import torch
    from safetensors.torch import save

    from unlearning import load_digits_dataset, train_classifier
    from unlearning.architectures import seeded_init
    from unlearning.data import InputAdapter, Normalization, Subset

    digits = load_digits_dataset()
    inputs = torch.cat([digits.train_inputs, digits.test_inputs]).contiguous()
    labels = torch.cat([digits.train_labels, digits.test_labels])
    n_train = len(digits.train_labels)
    model = seeded_init("cnn-small", 10, digits.input_shape, seed=seed)
    adapter = InputAdapter(Normalization((0.0,), (1.0,)), channels=1)  # the "unit" preset
    train_classifier(
        model,
        Subset(digits.train_inputs, digits.train_labels, torch.arange(n_train)),
        adapter,
        epochs=epochs,
        lr=0.05,
        seed=seed,
    )
    return DigitsUpload(
        manifest=digits_manifest(n_train, len(labels)),
        shard=save({"inputs": inputs, "labels": labels}),
        weights=save(model.state_dict()),
        train_labels=digits.train_labels.tolist(),
        input_shape=tuple(digits.input_shape),
    )
