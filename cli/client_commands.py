"""`mcu datasets|models|requests ...`: the HTTP API from the shell, through `mcu_client` (typer + rich).

The service and key come from `--url` / `--api-key` or `MCU_URL` / `MCU_API_KEY`; the key is never printed.
`--json` prints the API's answer as JSON for scripts. Progress goes to stderr, answers to stdout. Errors print
the problem's detail and exit 1.
"""

from __future__ import annotations

import contextlib
import json
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

from mcu_client import Client, Curve, DeletionRequest, McuError, RequestEnded

console = Console()
errors = Console(stderr=True)

datasets_app = typer.Typer(
    help="Datasets: upload image folders, .npz files or shards + manifest.", no_args_is_help=True
)
models_app = typer.Typer(help="Models: upload, show, versions, download weights.", no_args_is_help=True)
requests_app = typer.Typer(
    help="Deletion requests: create, follow, read the curve, select a point, cancel, "
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
    except McuError as error:
        errors.print(f"[red]error:[/red] {error}", markup=True, highlight=False)
        raise typer.Exit(1) from error
    except OSError as error:  # httpx's connection errors are OSErrors underneath
        errors.print(f"[red]error:[/red] cannot reach the service: {error}", highlight=False)
        raise typer.Exit(1) from error


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
    console.print(table)


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
        )
        if wait:
            with errors.status("a worker validates the model ..."):
                model = client.wait_model(model.id, timeout=None)
        if as_json:
            return emit(model)
        _print_model(client, model.id)


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
    console.print(table)


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
    console.print(table)


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
    samples: str | None = typer.Option(None, help="Forget these sample ids: a,b,c"),
    subjects: str | None = typer.Option(None, help="Forget every sample of these subjects: s1,s2"),
    ids_file: Path | None = typer.Option(None, exists=True, help="Sample ids, one a line (instead of --samples)."),
    base_method: str | None = typer.Option(None, help="ft | ga | neggrad_plus | rl | salun (default rl)"),
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
    state: str | None = typer.Option(None, help="Only requests in this state."),
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
            f"{r.progress.phase} {r.progress.fraction:.0%}",
            str(r.forget_count),
            f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.due_at:%Y-%m-%d}" if r.due_at else "—",
        )
    console.print(table)


@requests_app.command("show")
def requests_show(request_id: str, url: str | None = URL, api_key: str | None = KEY, as_json: bool = AS_JSON) -> None:
    """A request's state, progress, selection and error."""
    with connect(url, api_key) as client:
        request = client.get_request(request_id)
    if as_json:
        return emit(request)
    _print_request(request)


def _print_request(r: DeletionRequest) -> None:
    console.print(
        f"[bold]{r.id}[/bold] {r.state}: model {r.model_id} v{r.model_version}, {r.base_method}, "
        f"{r.forget_count} samples, {r.progress.phase} {r.progress.fraction:.0%}"
    )
    if r.due_at:
        console.print(f"  due {r.due_at:%Y-%m-%d}")
    if r.curve:
        console.print(f"  curve: {len(r.curve.points)} points, recommended t = {r.curve.recommended_t:.2f}")
    if r.selection:
        console.print(
            f"  selected t = {r.selection.t:.2f} by {r.selection.selected_by} -> version {r.selection.model_version}"
        )
    if r.error:
        console.print(f"  [red]error:[/red] {r.error.title}: {r.error.detail}")


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
            epoch = f" epoch {r.progress.epoch}/{r.progress.epochs}" if r.progress.epoch else ""
            progress.update(task, completed=r.progress.fraction, description=f"{r.state}: {r.progress.phase}{epoch}")

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
        request = watch_request(client, request_id, _ids(until), quiet=as_json)
    if as_json:
        return emit(request)
    _print_request(request)


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
    lines.append(Text("      ") + Text("  ").join(Text(f"{letter} {key}", style) for key, letter, style in METRICS))
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
    """Each measured point's metrics, the targets, the recommended t, the effective region and a chart."""
    nearest = min(curve.points, key=lambda p: abs(p.t - curve.recommended_t))
    table = Table("t", *(key for key, _, _ in METRICS), "rows F/R/T", "", title=title)
    for p in curve.points:
        rows = "/".join(str((p.rows or {}).get(split, "—")) for split in ("forget", "retain", "test"))
        table.add_row(
            fmt(p.t, 2),
            *(fmt(getattr(p, key)) for key, _, _ in METRICS),
            rows,
            "<- nearest to the recommended t" if p is nearest else "",
        )
    table.add_row("target", *(fmt(curve.targets.get(key)) for key, _, _ in METRICS), "", "", style="dim")
    console.print(table)
    console.print(f"recommended t = {curve.recommended_t:.2f}; effective region {curve.effective_region}")
    point = curve.recommended_point
    if point is not None:  # measured on every row, each metric ± its standard error
        errors = point.std_errors or {}
        console.print(
            "at the recommended t: "
            + ", ".join(f"{key} {fmt(getattr(point, key))} ± {fmt(errors.get(key))}" for key, _, _ in METRICS)
            + f"; rows {point.rows}"
        )
    for line in curve_chart(curve):
        console.print(line)


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
        request = client.select(request_id, chosen, acknowledge)  # type: ignore[arg-type]
        if not as_json:
            console.print(f"selected t = {chosen:.2f}; {request.state}")
        if watch:
            request = watch_request(client, request_id, ("succeeded",), quiet=as_json)
            if not as_json:
                _print_request(request)
    if as_json:
        emit(request)


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
