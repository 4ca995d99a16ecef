"""`mcu erasures ...`: subject-wide erasures from the shell (`/v1/erasures`, through `mcu_client`): erase
subjects or samples from every model whose training data holds them, one or a file of them at once."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.client_commands import AS_JSON, KEY, URL, connect, console, emit, errors, show
from mcu_client import Erasure

erasures_app = typer.Typer(
    help="Subject-wide erasures: erase subjects (or samples) from every model that holds them, one or a file of "
    "them at once; follow them; get their one signed report.",
    no_args_is_help=True,
)


def _print(erasure: Erasure) -> None:
    forget = erasure.forget
    console.print(
        f"erasure [bold]{erasure.id}[/bold]: {erasure.state}, {forget.get('count')} {forget.get('kind')} named"
        + (f" (external id {erasure.external_id})" if erasure.external_id else ""),
        highlight=False,
    )
    table = Table("request", "model", "state")
    for request in erasure.requests:
        table.add_row(request.id, request.model_id, request.state)
    for skipped in erasure.skipped:
        table.add_row("—", skipped.model_id, f"skipped: {skipped.detail}")
    if erasure.requests or erasure.skipped:
        show(table)


@erasures_app.command("create")
def erasures_create(
    subject: list[str] = typer.Option([], "--subject", help="A subject id (repeat for several)."),
    sample: list[str] = typer.Option([], "--sample", help="A sample id (repeat for several), instead of subjects."),
    external_id: str | None = typer.Option(None, help="Your reference: the same one again returns this erasure."),
    base_method: str | None = typer.Option(None, help="Each request's base method (see `mcu requests create`)."),
    config: str | None = typer.Option(None, help="Each request's config, a JSON object."),
    selection: str | None = typer.Option(None, help="manual (default) | auto"),
    callback_url: str | None = typer.Option(None, help="Each request's callbacks go here."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """One deletion request for every model whose training data holds the subjects (or samples)."""
    if bool(subject) == bool(sample):
        raise typer.BadParameter("give --subject or --sample (one or more), not both", param_hint="--subject")
    with connect(url, api_key) as client:
        erasure = client.create_erasure(
            subject_ids=subject or None,
            sample_ids=sample or None,
            external_id=external_id,
            base_method=base_method,
            config=json.loads(config) if config else None,
            selection=selection,
            callback_url=callback_url,
        )
    return emit(erasure) if as_json else _print(erasure)


@erasures_app.command("show")
def erasures_show(erasure_id: str, url: str | None = URL, api_key: str | None = KEY, as_json: bool = AS_JSON) -> None:
    """An erasure, its aggregate state and its requests."""
    with connect(url, api_key) as client:
        erasure = client.get_erasure(erasure_id)
    return emit(erasure) if as_json else _print(erasure)


@erasures_app.command("list")
def erasures_list(
    external_id: str | None = typer.Option(None, help="Only the erasure of this reference."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """Every erasure, newest first."""
    with connect(url, api_key) as client:
        erasures = list(client.erasures(external_id=external_id))
    if as_json:
        return emit(erasures)
    table = Table("id", "state", "external id", "named", "requests", "skipped", "created")
    for e in erasures:
        table.add_row(
            e.id,
            e.state,
            e.external_id or "—",
            f"{e.forget.get('count')} {e.forget.get('kind')}",
            str(len(e.requests)),
            str(len(e.skipped)),
            f"{e.created_at:%Y-%m-%d %H:%M}",
        )
    show(table)


def read_items(path: Path) -> list[dict[str, Any]]:
    """The items of a bulk file: a JSON array of erasure bodies (or {"items": [...]}), JSON Lines (one body per
    line), or a CSV with columns external_id and subject_id or sample_id (the rows of one external_id are one
    item)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        kind = next((k for k in ("subject_id", "sample_id") if rows and k in rows[0]), None)
        if not rows or kind is None or "external_id" not in rows[0]:
            raise typer.BadParameter("a CSV needs the columns external_id and subject_id (or sample_id)")
        grouped: dict[str, list[str]] = {}
        for row in rows:
            grouped.setdefault(row["external_id"], []).append(row[kind])
        return [{f"{kind}s": ids, "external_id": ext} for ext, ids in grouped.items()]
    try:
        data = json.loads(text)
        items = data.get("items") if isinstance(data, dict) else data
    except json.JSONDecodeError:
        try:  # JSON Lines
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise typer.BadParameter(f"{path} is neither JSON nor JSON Lines: {error}") from error
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise typer.BadParameter(f"{path} holds no list of erasure objects")
    return items


@erasures_app.command("bulk")
def erasures_bulk(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSON, JSON Lines or CSV (see above)."),
    url: str | None = URL,
    api_key: str | None = KEY,
    as_json: bool = AS_JSON,
) -> None:
    """File many erasures, each with its external_id (sending the file again makes nothing twice), 1,000 per
    call. Exit 1 when any item was refused."""
    items = read_items(file)
    with connect(url, api_key) as client:
        results = client.bulk_erasures(items)
    failed = [r for r in results if r.result == "error"]
    if as_json:
        emit(results)
    else:
        counts = {kind: sum(r.result == kind for r in results) for kind in ("created", "existing", "error")}
        console.print(", ".join(f"{n} {kind}" for kind, n in counts.items()), highlight=False)
        for r in failed:
            errors.print(f"item {r.index} ({r.external_id}): {r.error.detail if r.error else '?'}", highlight=False)
    if failed:
        raise typer.Exit(1)


@erasures_app.command("report")
def erasures_report(
    erasure_id: str,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write it here (default stdout)."),
    url: str | None = URL,
    api_key: str | None = KEY,
) -> None:
    """The one signed report over every request of a succeeded erasure (check it with `mcu reports verify`)."""
    with connect(url, api_key) as client:
        text = json.dumps(client.erasure_report(erasure_id), indent=2)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n")
        errors.print(f"report written to {output}", highlight=False)
