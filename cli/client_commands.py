"""`mcu datasets|models|requests ...`: the HTTP API from the shell, through `mcu_client` (typer + rich).

The service and key come from `--url` / `--api-key` or `MCU_URL` / `MCU_API_KEY`; the key is never printed.
`--json` prints the API's answer as JSON for scripts. Progress goes to stderr, answers to stdout. Errors print
the problem's detail and exit 1.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import tempfile
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from mcu_client import (
    ApiError,
    Client,
    Conflict,
    Curve,
    DeletionRequest,
    DeletionRequestDetail,
    McuError,
    RequestEnded,
    Unreachable,
    wait_for,
)
from mcu_client.types import Progress as RequestProgress

console = Console()
if not console.is_terminal:  # piped or redirected: never cut to a width, ids and names stay whole
    console.width = 10_000
errors = Console(stderr=True)

datasets_app = typer.Typer(
    help="Datasets: upload image folders, .npz files or shards + manifest.", no_args_is_help=True
)
models_app = typer.Typer(
    help="Models: upload, show, versions, download weights, require approval, delete one that failed validation.",
    no_args_is_help=True,
)
requests_app = typer.Typer(
    help="Deletion requests: create, follow, approve or deny, read the curve, select a point, cancel, "
    "extend the deadline, get the signed report.",
    no_args_is_help=True,
)

URL = typer.Option(None, "--url", envvar="MCU_URL", help="The service (default http://127.0.0.1:8000).")
KEY = typer.Option(None, "--api-key", envvar="MCU_API_KEY", show_default=False, help="API key (prefer MCU_API_KEY).")
AS_JSON = typer.Option(False, "--json", help="Print the API's JSON answer.")
METRICS = (
    ("forget_accuracy", "F", "red"),
    ("retain_accuracy", "R", "blue"),
    ("test_accuracy", "T", "green"),
    ("mia_efficacy", "M", "magenta"),
)


@contextlib.contextmanager
def connect(url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client; an API error or an unreachable service ends the command with its message and exit code 1."""
    try:
        with Client(url, api_key, timeout=300) as client:
            yield client
    except Unreachable as error:
        errors.print(
            f"error: {error}. Is the service running there? Start it with `mcu serve`, or give its address with "
            "--url or MCU_URL.",
            markup=False,
            highlight=False,
            soft_wrap=True,  # one line whatever the terminal's width: the address and the advice stay whole
        )
        raise typer.Exit(1) from error
    except McuError as error:
        errors.print(f"[red]error:[/red] {error}", markup=True, highlight=False)
        raise typer.Exit(1) from error
    except OSError as error:  # httpx's connection errors are OSErrors underneath
        errors.print(f"[red]error:[/red] cannot reach the service: {error}", highlight=False)
        raise typer.Exit(1) from error


def show(table: Table) -> None:
    """A table at its natural width, as kubectl prints: in a narrow terminal its lines wrap, but no id, name
    or state is cut short (every other command needs the id whole)."""
    natural = console.measure(table, options=console.options.update(max_width=10_000)).maximum
    width, console.width = console.width, max(console.width, natural)
    try:
        console.print(table)
    finally:
        console.width = width


def emit(value: BaseModel | Sequence[BaseModel]) -> None:
    data = [v.model_dump(mode="json") for v in value] if isinstance(value, Sequence) else value.model_dump(mode="json")
    console.print_json(json.dumps(data))


def fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "—"


# --- datasets ------------------------------------------------------------------------------------------------


@datasets_app.command("upload")
def datasets_upload(
    path: Path = typer.Argument(
        ...,
        exists=True,
        help="train/<class>/* + test/<class>/* folder, a .npz, or a folder with manifest.csv and *.safetensors",
    ),
    name: str | None = typer.Option(None, help="Dataset name (default: the file or folder name)."),
    description: str | None = typer.Option(None, help="Default: the class names by label, when known."),
    subjects: Path | None = typer.Option(
        None, exists=True, help="CSV sample_id,subject_id naming each sample's data subject."
    ),
    size: str | None = typer.Option(
        None,
        help="Image folders: decode and resize every image to WxH (e.g. 32x32), "
        "stored as pixels. Default: PNG / JPEG files kept encoded, any size.",
    ),
    max_shard_mb: int = typer.Option(64, min=1, help="Largest shard built, in MiB of encoded bytes (or pixels)."),
    num_classes: int | None = typer.Option(None, help="Default: the largest label + 1."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Build shards and a manifest client-side (sample ids = relative paths) and register them."""
    from mcu_client.dataset_files import prepare_dataset

    parts = size.lower().split("x") if size else []
    if size is not None and (len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts)):
        raise typer.BadParameter("give WxH, e.g. 32x32", param_hint="--size")
    resize = (int(parts[0]), int(parts[1])) if parts else None
    with connect(url, api_key) as client, tempfile.TemporaryDirectory(prefix="mcu-upload-") as scratch:
        with _progress() as progress:
            task = progress.add_task("reading samples", total=None)
            prepared = prepare_dataset(
                path,
                scratch,
                subjects_csv=subjects,
                max_shard_bytes=max_shard_mb << 20,
                size=resize,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
            megabytes = sum(s.stat().st_size for s in prepared.shards) / (1 << 20)
            progress.update(task, description=f"uploading {len(prepared.shards)} shard(s), {megabytes:.1f} MiB")
            dataset = client.create_dataset(
                name or path.stem,
                prepared.manifest,
                prepared.shards,
                description=description or prepared.describe_classes(),
                num_classes=num_classes,
            )
        if as_json:
            return emit(dataset)
        shown = (
            f"PNG / JPEG, {dataset.input_shape[0]} channel(s), any size"
            if dataset.input_encoding == "encoded"
            else str(dataset.input_shape)
        )
        console.print(
            f"dataset [bold]{dataset.id}[/bold] ({dataset.name}): {dataset.num_train} train / "
            f"{dataset.num_test} test, {dataset.num_classes} classes, input {shown}"
        )
        if prepared.classes:
            console.print(prepared.describe_classes(), highlight=False)


@datasets_app.command("list")
def datasets_list(url: str | None = URL, api_key: str | None = KEY, as_json: bool = AS_JSON) -> None:
    """Every dataset."""
    with connect(url, api_key) as client:
        datasets = list(client.datasets())
    if as_json:
        return emit(datasets)
    table = Table("id", "name", "train", "test", "classes", "input", "created")
    for d in datasets:
        table.add_row(
            d.id,
            d.name,
            str(d.num_train),
            str(d.num_test),
            str(d.num_classes),
            str(d.input_shape),
            f"{d.created_at:%Y-%m-%d %H:%M}",
        )
    show(table)


# --- models --------------------------------------------------------------------------------------------------


@models_app.command("upload")
def models_upload(
    weights: Path = typer.Argument(..., exists=True, dir_okay=False, help="safetensors state_dict"),
    name: str = typer.Option(...),
    architecture: str = typer.Option(..., help="e.g. resnet18, timm:vit_tiny_patch16_224, cnn-small"),
    num_classes: int = typer.Option(...),
    dataset: str = typer.Option(..., help="The dataset id."),
    preprocessing: str = typer.Option(..., help='unit | imagenet | dataset | {"mean": [...], "std": [...]}'),
    architecture_kwargs: str | None = typer.Option(None, help="JSON object of constructor arguments."),
    input_transform: str | None = typer.Option(
        None,
        help="Resize / center crop before the preprocessing, e.g. "
        '{"resize": 256, "center_crop": 224} (needed for encoded images of '
        "mixed sizes).",
    ),
    augmentation: str | None = typer.Option(
        None, help="Training steps only: none | crop_flip | a JSON list of steps (default none)."
    ),
    require_approval: bool = typer.Option(
        False, "--require-approval", help="Its deletion requests wait for another key's `mcu requests approve`."
    ),
    wait: bool = typer.Option(True, help="Wait for a worker to validate it."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Register a trained model (version 1); a worker checks that its weights load and measures it."""
    with connect(url, api_key) as client:
        kwargs = json.loads(architecture_kwargs) if architecture_kwargs else None
        preset = json.loads(preprocessing) if preprocessing.startswith("{") else preprocessing
        model = client.create_model(
            name,
            architecture,
            num_classes,
            dataset,
            weights,
            preset,  # the server checks
            architecture_kwargs=kwargs,
            input_transform=input_transform,  # the JSON texts
            augmentation=augmentation,
            require_approval=require_approval,
        )
        if wait:
            with errors.status("a worker validates the model ..."):
                model = wait_for(
                    lambda: m if (m := client.get_model(model.id)).state != "validating" else None,
                    None,
                    f"model {model.id} to be validated",
                    0.5,
                )
        if as_json:
            emit(model)
        elif model.state != "invalid":
            _print_model(client, model.id)
            if wait:
                _print_validation(client, model.id)
    if model.state == "invalid":
        errors.print(
            f"error: model {model.id} is invalid: {model.error.detail if model.error else 'no detail'}\n"
            f"Fix what it names and upload again; `mcu models delete {model.id} --yes` removes this one.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _print_validation(client: Client, model_id: str) -> None:
    """Validation's verdict on a ready model: version 1's accuracies under the declared preprocessing."""
    measured = next(client.versions(model_id)).metrics or {}
    console.print(
        f"validation: ready; version 1 test accuracy {fmt(measured.get('test_accuracy'))}, train accuracy "
        f"{fmt(measured.get('retain_accuracy'))} (under the declared preprocessing)",
        highlight=False,
    )


def _print_model(client: Client, model_id: str) -> None:
    model = client.get_model(model_id)
    console.print(
        f"model [bold]{model.id}[/bold] ({model.name}): {model.architecture}, {model.num_classes} classes, "
        f"state {model.state}, current version {model.current_version}"
    )
    console.print(
        f"  preprocessing {model.preprocessing.preset or 'custom'}: mean {model.preprocessing.mean}, std "
        f"{model.preprocessing.std}; {model.input_adapter or ''}",
        highlight=False,
    )
    if model.input_transform or model.augmentation:
        console.print(
            f"  input transform {model.input_transform or 'none'}; augmentation (training only) "
            f"{', '.join(model.augmentation) or 'none'}",
            highlight=False,
        )
    if model.require_approval:
        console.print("  deletion requests wait for approval (requests:approve, not the submitter's key)")
    for warning in model.warnings:
        console.print(f"  [yellow]warning:[/yellow] {warning}")
    if model.error:
        console.print(f"  [red]error:[/red] {model.error.detail}")


@models_app.command("list")
def models_list(url: str | None = URL, api_key: str | None = KEY, as_json: bool = AS_JSON) -> None:
    """Every model."""
    with connect(url, api_key) as client:
        models = list(client.models())
    if as_json:
        return emit(models)
    table = Table("id", "name", "architecture", "state", "version", "dataset")
    for m in models:
        table.add_row(m.id, m.name, m.architecture, m.state, str(m.current_version), m.dataset_id)
    show(table)


@models_app.command("show")
def models_show(model_id: str, url: str | None = URL, api_key: str | None = KEY, as_json: bool = AS_JSON) -> None:
    """A model's state, preprocessing and current version."""
    with connect(url, api_key) as client:
        if as_json:
            return emit(client.get_model(model_id))
        _print_model(client, model_id)


@models_app.command("versions")
def models_versions(model_id: str, url: str | None = URL, api_key: str | None = KEY, as_json: bool = AS_JSON) -> None:
    """The model's lineage: every version with its parent, request, t, sha256 and metrics."""
    with connect(url, api_key) as client:
        versions = list(client.versions(model_id))
    if as_json:
        return emit(versions)
    table = Table("version", "parent", "request", "t", "forget", "retain", "test", "MIA", "sha256")
    for v in versions:
        m = v.metrics or {}
        table.add_row(
            str(v.version),
            str(v.parent_version or "—"),
            v.deletion_request_id or "—",
            fmt(v.t, 2),
            *(fmt(m.get(key)) for key, _, _ in METRICS),
            v.sha256,
        )
    show(table)


@models_app.command("delete")
def models_delete(
    model_id: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    url: str | None = URL,
    api_key: str | None = KEY,
) -> None:
    """Delete a model that failed validation (state invalid) and its stored weights. A ready model cannot be
    deleted: its versions and the evidence of its deletion requests stay."""
    if not yes:
        typer.confirm(f"delete model {model_id}?", abort=True)
    with connect(url, api_key) as client:
        client.delete_model(model_id)
    console.print(f"model {model_id} deleted", highlight=False)


@models_app.command("approval")
def models_approval(
    model_id: str,
    required: bool = typer.Option(..., "--required/--not-required", help="Whether its requests wait for approval."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Whether the model's new deletion requests wait for approval (a key with requests:approve)."""
    with connect(url, api_key) as client:
        model = client.update_model(model_id, require_approval=required)
    if as_json:
        return emit(model)
    console.print(f"{model.id}: deletion requests {'wait for' if model.require_approval else 'need no'} approval")


@models_app.command("download")
def models_download(
    model_id: str,
    version: int | None = typer.Option(None, help="Default: the current one."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Default: <model>-v<N>.safetensors"),
    url: str | None = URL,
    api_key: str | None = KEY,
) -> None:
    """Download a version's weights (safetensors), checking their sha256."""
    with connect(url, api_key) as client:
        version = version or client.get_model(model_id).current_version
        output = output or Path(f"{model_id}-v{version}.safetensors")
        with _progress() as progress:
            task = progress.add_task(f"version {version}", total=None)
            sha256 = client.download_weights(
                model_id,
                version,
                output,
                on_bytes=lambda done, total: progress.update(task, completed=done, total=total),
            )
    console.print(f"{output}  sha256 {sha256} (checked)")


# --- deletion requests ---------------------------------------------------------------------------------------


def _ids(values: str | None) -> list[str]:
    return [v.strip() for v in (values or "").split(",") if v.strip()]


@requests_app.command("create")
def requests_create(
    model: str = typer.Option(..., help="The model id."),
    classes: str | None = typer.Option(None, help="Forget these classes: 3,5"),
    samples: str | None = typer.Option(
        None, help="Forget these sample ids (the manifest's sample_id column, e.g. s0001,s0002 or train/cat/0001.png)."
    ),
    subjects: str | None = typer.Option(None, help="Forget every sample of these subjects: s1,s2"),
    ids_file: Path | None = typer.Option(
        None, exists=True, help="Sample ids as in the manifest's sample_id column, one a line (instead of --samples)."
    ),
    base_method: str | None = typer.Option(
        None, help="One the service offers (`mcu requests methods` lists them; default: the service's)."
    ),
    config: str | None = typer.Option(None, help='JSON, e.g. {"epochs": 5, "grid_points": 11}'),
    auto: bool = typer.Option(False, "--auto", help="Let the service select the recommended t."),
    external_id: str | None = typer.Option(None, help="Your reference, e.g. GDPR-2026-0001."),
    callback_url: str | None = typer.Option(None),
    watch: bool = typer.Option(False, "--watch", help="Then follow it live."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Submit a deletion request: exactly one of --classes, --samples/--ids-file, --subjects."""
    sample_ids = _ids(samples) + (ids_file.read_text().split() if ids_file else [])
    given: dict[str, list[Any]] = {
        "classes": [int(c) for c in _ids(classes)],
        "sample_ids": sample_ids,
        "subject_ids": _ids(subjects),
    }
    forget = {k: v for k, v in given.items() if v}
    if len(forget) != 1:
        raise typer.BadParameter("give exactly one of --classes, --samples/--ids-file or --subjects")
    with connect(url, api_key) as client:
        request = client.create_request(
            model,
            forget,
            base_method=base_method,
            config=json.loads(config) if config else None,
            selection="auto" if auto else None,
            external_id=external_id,
            callback_url=callback_url,
        )
        if not as_json:
            console.print(
                f"deletion request [bold]{request.id}[/bold]: {request.forget_count} samples to forget, "
                f"state {request.state}"
            )
        if watch:
            request = watch_request(client, request.id, quiet=as_json)
    if as_json:
        emit(request)


@requests_app.command("list")
def requests_list(
    model: str | None = typer.Option(None, help="Only this model's."),
    state: str | None = typer.Option(None, help="Only requests in this state (`mcu requests states`)."),
    limit: int = typer.Option(50, min=1, help="At most this many, newest first."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Deletion requests, newest first."""
    with connect(url, api_key) as client:
        found = list(islice(client.requests(model_id=model, state=state), limit))
    if as_json:
        return emit(found)
    table = Table("id", "external id", "model", "state", "progress", "forget", "created", "due")
    for r in found:
        table.add_row(
            r.id,
            r.external_id or "—",
            f"{r.model_id} v{r.model_version}",
            r.state,
            f"{_overall(r):.0%} ({r.progress.phase})",
            str(r.forget_count),
            f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.due_at:%Y-%m-%d}" if r.due_at else "—",
        )
    show(table)


@requests_app.command("show")
def requests_show(request_id: str, url: str | None = URL, api_key: str | None = KEY, as_json: bool = AS_JSON) -> None:
    """A request's state, progress, selection and error; its job's timings, last heartbeat and training."""
    with connect(url, api_key) as client:
        request = client.get_request(request_id)
    if as_json:
        return emit(request)
    _print_request(request)
    _print_diagnostics(request)


def _print_request(r: DeletionRequest) -> None:
    console.print(
        f"[bold]{r.id}[/bold] {r.state}: model {r.model_id} v{r.model_version}, {r.base_method}, "
        f"{r.forget_count} samples, {_phase_line(r.progress)}, {_overall(r):.0%} of the job"
    )
    if r.due_at:
        console.print(f"  due {r.due_at:%Y-%m-%d}")
    if r.curve:
        console.print(f"  curve: {len(r.curve.points)} points, recommended t = {r.curve.recommended_t:.2f}")
    if r.selection:
        console.print(
            f"  selected t = {r.selection.t:.2f} by {r.selection.selected_by} -> version {r.selection.model_version}"
        )
    if r.approval:
        console.print(f"  {r.approval.decision} by {r.approval.by}: {r.approval.reason}", highlight=False)
    if r.error:
        console.print(f"  [red]error:[/red] {r.error.title}: {r.error.detail}")


def _print_diagnostics(r: DeletionRequestDetail) -> None:
    """The job's diagnostics (GET of one request), one line each; nothing before a worker took the job."""
    if r.last_heartbeat_at:
        console.print(f"  last heartbeat {r.last_heartbeat_at:%Y-%m-%d %H:%M:%S} UTC", highlight=False)
    if r.timings:
        phases = ", ".join(f"{name} {getattr(r.timings, name):.2f}s" for name in ("mask", "base", "curve", "evaluate"))
        console.print(f"  timings: {phases}; total {r.timings.total:.2f}s", highlight=False)
    if t := r.training:
        losses = ", ".join(fmt(loss) for loss in t.epoch_losses) or "—"
        betas = ", ".join(f"β {beta} × {n}" for beta, n in sorted(t.beta_counts.items(), key=lambda kv: float(kv[0])))
        rollbacks = ", ".join(f"epoch {b.epoch} (lr {b.lr:g})" for b in t.rollbacks) or "none"
        console.print(
            f"  training: {t.batches} batches ({t.skipped_nonfinite_batches} skipped), {betas}", highlight=False
        )
        console.print(f"  loss per epoch: {losses}", highlight=False)
        console.print(
            f"  rollbacks: {rollbacks}" + (f"; final lr {t.final_lr:g}" if t.final_lr else ""), highlight=False
        )


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=False,
    )  # stderr: stdout stays the answer


def _overall(r: DeletionRequest) -> float:
    """The whole job's share done: one bar from queued to finished (the clock beside it runs until then)."""
    if r.state in ("awaiting_selection", "materializing", "succeeded"):
        return 1.0
    return r.progress.overall or 0.0


def _phase_line(p: RequestProgress) -> str:
    """e.g. `curve 40% (epoch 4/10), about 2m 10s left`."""
    epoch = f" (epoch {p.epoch}/{p.epochs})" if p.epoch else ""
    left = f", about {_duration(p.eta_seconds)} left" if p.eta_seconds is not None else ""
    return f"{p.phase} {p.fraction:.0%}{epoch}{left}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def watch_request(
    client: Client,
    request_id: str,
    until: Sequence[str] = ("awaiting_selection", "succeeded"),
    quiet: bool = False,
    alive: Callable[[], bool] | None = None,
) -> DeletionRequest:
    """Follow a request with a live progress bar until it reaches `until`; exit 1 when it ends elsewhere.
    `alive` (the demo's own service processes) is checked at every poll."""
    last_state = None

    with _progress() if not quiet else contextlib.nullcontext() as progress:
        task = progress.add_task("", total=1.0) if progress else None

        def show(r: DeletionRequest) -> None:
            nonlocal last_state
            if alive is not None and not alive():
                raise McuError("the local API or worker stopped; see the logs in MCU_DATA_DIR")
            if progress is None or task is None:  # (both or neither)
                return
            if r.state != last_state:
                progress.console.print(f"{r.state}", highlight=False)
                last_state = r.state
            progress.update(task, completed=_overall(r), description=f"{r.state}: {_phase_line(r.progress)}")

        try:
            return client.wait(request_id, until=until, on_progress=show)
        except RequestEnded as ended:
            if not quiet:
                _print_request(ended.request)
            raise typer.Exit(1) from ended


@requests_app.command("watch")
def requests_watch(
    request_id: str,
    until: str = typer.Option("awaiting_selection,succeeded", help="Stop at any of these states."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Follow a request live (state, phase, epoch, progress bar) until it awaits selection or finishes."""
    with connect(url, api_key) as client:
        request = watch_request(client, request_id, served_states(client, _ids(until), "--until"), quiet=as_json)
    if as_json:
        return emit(request)
    _print_request(request)


def served_states(client: Client, names: list[str], option: str) -> list[str]:
    """`names`, each a state the service has (GET /v1/meta): a typo would otherwise be waited for forever."""
    known = client.meta().states
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise typer.BadParameter(f"states of the service: {', '.join(known)}", param_hint=option)
    return names


@requests_app.command("states")
def requests_states(url: str | None = URL, api_key: str | None = KEY, as_json: bool = AS_JSON) -> None:
    """The states a request goes through and where each may go next, as the service has them."""
    with connect(url, api_key) as client:
        meta = client.meta()
    if as_json:
        return emit(meta)  # the API's whole answer: states, transitions, base methods
    table = Table("state", "may move to")
    for state in meta.states:
        table.add_row(state, ", ".join(meta.transitions.get(state, ())) or "— (final)")
    show(table)


@requests_app.command("methods")
def requests_methods(url: str | None = URL, api_key: str | None = KEY, as_json: bool = AS_JSON) -> None:
    """The base methods the service offers, with their default settings (override them in --config's "base")."""
    with connect(url, api_key) as client:
        meta = client.meta()
    if as_json:
        return emit(meta.base_methods)
    table = Table("method", "description", "defaults")
    for method in meta.base_methods:
        default = " (default)" if method.name == meta.default_base_method else ""
        settings = ", ".join(f"{name} {value}" for name, value in method.defaults.items())
        table.add_row(method.name + default, method.description, settings)
    show(table)


def curve_chart(curve: Curve, width: int = 51, height: int = 11) -> list[Text]:
    """A small terminal chart: each metric's letter at its measured points, t across, 0..1 up; `|` marks the
    recommended t and `=` the effective region on the axis."""
    grid = [[(" ", "") for _ in range(width)] for _ in range(height)]
    column = lambda t: round(t * (width - 1))  # noqa: E731
    for row in grid:
        row[column(curve.recommended_t)] = ("|", "dim")
    for point in curve.points:
        for key, letter, style in METRICS:
            row = height - 1 - round(getattr(point, key) * (height - 1))
            cell = grid[row][column(point.t)]
            grid[row][column(point.t)] = ("*", "bold") if cell[0] not in (" ", "|") else (letter, style)
    lines = []
    for index, row in enumerate(grid):
        label = f"{1 - index / (height - 1):4.1f} ┤" if index % 5 == 0 else "     │"
        line = Text(label)
        for char, style in row:
            line.append(char, style)
        lines.append(line)
    axis = ["─"] * width
    for lo, hi in curve.effective_region:
        for c in range(column(lo), column(hi) + 1):
            axis[c] = "="
    lines.append(Text("     └" + "".join(axis)))
    lines.append(Text("      t=0" + " " * (width - 9) + "t=1"))
    legend = [Text(f"{letter} {key.removesuffix('_accuracy')}", style) for key, letter, style in METRICS]
    lines.append(Text("      ") + Text("  ").join([*legend, Text("* several")]))
    return lines


@requests_app.command("curve")
def requests_curve(request_id: str, url: str | None = URL, api_key: str | None = KEY, as_json: bool = AS_JSON) -> None:
    """The curve: each measured point's metrics, the targets, the recommended t, and a small chart."""
    with connect(url, api_key) as client:
        curve = client.curve(request_id)
    if as_json:
        return emit(curve)
    print_curve(curve, f"curve of {request_id}")


def print_curve(curve: Curve, title: str) -> None:
    """Each measured point's metrics, the targets, the recommended t, the effective region and a chart, in 80
    columns, every metric named for what it measures."""
    classwise = any(p.forgotten_class_test_accuracy is not None for p in curve.points)
    columns = [
        ("forget_accuracy", "forget"),
        ("retain_accuracy", "retain"),
        ("test_accuracy", "test*" if classwise else "test"),
        *([("forgotten_class_test_accuracy", "forgotten")] if classwise else []),
        ("mia_efficacy", "MIA"),
    ]
    nearest = min(curve.points, key=lambda p: abs(p.t - curve.recommended_t))
    measured_on = [
        "/".join(str((p.rows or {}).get(split, "—")) for split in ("forget", "retain", "test")) for p in curve.points
    ]
    per_point = len(set(measured_on)) > 1  # grid points share their rows: a column only when they do not
    table = Table("t", *(header for _, header in columns), *(["rows F/R/T"] if per_point else []), "", title=title)
    for p, rows in zip(curve.points, measured_on, strict=True):
        cells = [fmt(getattr(p, key)) for key, _ in columns] + ([rows] if per_point else [])
        table.add_row(fmt(p.t, 2), *cells, "← recommended" if p is nearest else "")
    table.add_row("target", *(fmt(curve.targets.get(key)) for key, _ in columns), style="dim")
    show(table)
    console.print(
        "forget, retain, test: accuracy on those rows; MIA: membership-inference efficacy on the forget rows"
        + ("." if per_point else f"; rows (forget/retain/test): {measured_on[0]}.")
        + (
            "\n*test: the retained classes' test rows only; forgotten: the forgotten class's test rows."
            if classwise
            else ""
        ),
        highlight=False,
    )
    console.print(f"recommended t = {curve.recommended_t:.2f} (← marks the nearest measured point)", highlight=False)
    if curve.targets.get("mia_efficacy") is None:
        console.print(
            "MIA has no target (the original model's attack is a coin flip on these rows, docs/algorithm.md §4, or "
            "the operator's targets name none): neither the recommended t nor the erasure criterion uses it.",
            highlight=False,
        )
    if curve.effective_region:
        spans = ", ".join(f"{lo:.2f}–{hi:.2f}" for lo, hi in curve.effective_region)
        console.print(
            f"effective region (= under the chart): t {spans}, where the points come nearer the targets than the "
            "base-unlearned model (t = 1) does",
            highlight=False,
        )
    point = curve.recommended_point
    if point is not None:  # measured on every row, each metric ± its standard error
        errors = point.std_errors or {}
        console.print(
            "at the recommended t, on every row: "
            + ", ".join(f"{header} {fmt(getattr(point, key))} ± {fmt(errors.get(key))}" for key, header in columns),
            highlight=False,
        )
    for line in curve_chart(curve):
        console.print(line)


@requests_app.command("attack")
def requests_attack(
    request_id: str,
    t: float = typer.Option(..., min=0.0, max=1.0, help="The point's t."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for a worker to run the attacks."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Run the auditor's attacks (relearning, feature probe) on a point before choosing it."""
    with connect(url, api_key) as client:
        attack = client.attack(request_id, t)
        if wait:
            with errors.status(f"a worker attacks the point t = {t:.2f} ..."):
                attack = wait_for(
                    lambda: next(
                        (
                            a
                            for a in client.attacks(request_id)
                            if a.t == attack.t and a.state in ("succeeded", "failed")
                        ),
                        None,
                    ),
                    None,
                    f"the attacks on t = {attack.t}",
                    1.0,
                )
    if as_json:
        emit(attack)
        return
    if attack.error:
        console.print(f"t = {attack.t:.2f}: {attack.state}: {attack.error.get('detail')}", highlight=False)
        return
    if attack.state != "succeeded":
        console.print(f"t = {attack.t:.2f}: {attack.state}", highlight=False)
        return
    metrics, evidence, criterion = attack.metrics or {}, attack.evidence or {}, attack.criterion or {}
    relearning = evidence.get("relearning", {})
    run = "k_shot" if "k_shot" in relearning else "retain_only"
    relearned = relearning.get(run, {}).get("published", {}).get("forget_accuracy", [None])[-1]
    probe = evidence.get("feature_probe", {}).get("published", {}).get("forget_accuracy")
    console.print(
        f"t = {attack.t:.2f}: forget {fmt(metrics.get('forget_accuracy'))}, test {fmt(metrics.get('test_accuracy'))}, "
        f"forget after relearning ({run}) {fmt(relearned)}, probe on forget rows {fmt(probe)}",
        highlight=False,
    )
    verdict = "met" if criterion.get("met") else "not met: " + "; ".join(criterion.get("reasons", []))
    console.print(f"erasure criterion {verdict}", highlight=False, soft_wrap=True)


@requests_app.command("select")
def requests_select(
    request_id: str,
    t: float | None = typer.Option(None, min=0.0, max=1.0, help="The point's t."),
    recommended: bool = typer.Option(False, "--recommended", help="Select the recommended t."),
    watch: bool = typer.Option(False, "--watch", help="Then follow it until it succeeds."),
    acknowledge: str | None = typer.Option(
        None,
        help="For a point that fails the erasure criterion: why it is published anyway, "
        "beginning with 'erasure criterion not met'.",
    ),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Select a point of the curve: it becomes the model's next version."""
    if (t is None) == (not recommended):
        raise typer.BadParameter("give exactly one of --t or --recommended")
    with connect(url, api_key) as client:
        chosen = client.curve(request_id).recommended_t if recommended else t
        try:
            request = client.select(request_id, chosen, acknowledge)  # type: ignore[arg-type]
        except Conflict as error:
            if not error.type.endswith("/erasure-criterion-not-met") or not error.errors:
                raise
            (problem,) = error.errors
            errors.print(
                f"error: the point at t = {chosen:.2f} does not meet the erasure criterion: {problem['msg']}.\n"
                f"To publish it anyway: mcu requests select {request_id} --t {chosen:.2f} "
                f"--acknowledge {shlex.quote(problem['acknowledge'] + ': <why>')}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from error
        if not as_json:
            console.print(f"selected t = {chosen:.2f}; {request.state}")
        _warn_retention(client, request)
        if watch:
            request = watch_request(client, request_id, ("succeeded",), quiet=as_json)
            if not as_json:
                _print_request(request)
    if as_json:
        emit(request)


def _warn_retention(client: Client, request: DeletionRequest) -> None:
    """Once the chosen point is published, the service's retention policy deletes the weights of the versions
    it supersedes beyond the newest MCU_KEEP_SUPERSEDED_VERSIONS (worker/erasure.py): name them while they can
    still be downloaded."""
    try:
        keep = client.meta().keep_superseded_versions
        versions = sorted(client.versions(request.model_id), key=lambda v: v.version, reverse=True)
    except ApiError:  # a key that may select but not read these: the selection stands, without the warning
        return
    if keep is None:  # an older server that does not say
        return
    doomed = sorted(v.version for v in versions[keep:] if v.weights_deleted_at is None)
    if doomed:
        listed = ", ".join(map(str, doomed))
        errors.print(
            f"warning: once this point is published, the service deletes the weights of version(s) {listed} of "
            f"model {request.model_id} (it keeps the newest {keep} superseded version(s): "
            f"MCU_KEEP_SUPERSEDED_VERSIONS). To keep a copy, download it now: "
            f"mcu models download {request.model_id} --version {doomed[-1]}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@requests_app.command("extend")
def requests_extend(
    request_id: str,
    days: int = typer.Option(..., min=1, max=60, help="Days added to due_at."),
    reason: str = typer.Option(..., help="Why (kept with the request; once per request)."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Extend a request's deadline once (GDPR Art. 12(3): by at most two further months, with reasons)."""
    with connect(url, api_key) as client:
        request = client.extend(request_id, days, reason)
    if as_json:
        return emit(request)
    console.print(f"{request.id}: due {request.due_at:%Y-%m-%d %H:%M} UTC")


@requests_app.command("approve")
def requests_approve(
    request_id: str,
    reason: str = typer.Option(..., help="Why (kept in the audit trail and the report)."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Approve a request awaiting approval: its job starts (a key with requests:approve, not the submitter's)."""
    _decide(request_id, "approve", reason, url, api_key, as_json)


@requests_app.command("deny")
def requests_deny(
    request_id: str,
    reason: str = typer.Option(..., help="Why (kept in the audit trail and the report)."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Deny a request awaiting approval: it is cancelled and nothing runs."""
    _decide(request_id, "deny", reason, url, api_key, as_json)


def _decide(request_id: str, decision: str, reason: str, url: str | None, api_key: str | None, as_json: bool) -> None:
    with connect(url, api_key) as client:
        request = client.approve(request_id, reason) if decision == "approve" else client.deny(request_id, reason)
    if as_json:
        return emit(request)
    console.print(f"{request.id}: {request.state}", highlight=False)


@requests_app.command("report")
def requests_report(
    request_id: str,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write it here (default stdout)."),
    html: bool = typer.Option(False, "--html", help="The printable page instead of signed JSON."),
    url: str | None = URL,
    api_key: str | None = KEY,
) -> None:
    """The signed proof-of-erasure report of a succeeded request (check it with `mcu reports verify`)."""
    with connect(url, api_key) as client:
        text = client.report_html(request_id) if html else json.dumps(client.report(request_id), indent=2)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n")
        errors.print(f"report written to {output}", highlight=False)


@requests_app.command("cancel")
def requests_cancel(
    request_id: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Cancel a request (a running job stops within one training batch)."""
    if not yes:
        typer.confirm(f"cancel {request_id}?", abort=True)
    with connect(url, api_key) as client:
        request = client.cancel(request_id)
    if as_json:
        return emit(request)
    console.print(f"{request.id}: {request.state}")


@requests_app.command("events")
def requests_events(request_id: str, url: str | None = URL, api_key: str | None = KEY, as_json: bool = AS_JSON) -> None:
    """The request's audit trail, oldest first: every state change, job step, callback attempt and selection."""
    with connect(url, api_key) as client:
        events = list(client.events(request_id))
    if as_json:
        return emit(events)
    table = Table("at", "event", "state", "by", "detail")
    for e in events:
        detail = ", ".join(f"{key} {json.dumps(value)}" for key, value in (e.detail or {}).items())
        table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", e.type, e.state or "—", e.actor or "—", detail or "—")
    show(table)
