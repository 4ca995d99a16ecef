"""`mcu reports verify`, `mcu audit verify`, `mcu signing-key rotate`: checking the evidence, offline."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated

import typer

reports_app = typer.Typer(help="Proof-of-erasure reports.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)
signing_app = typer.Typer(help="The key that signs reports.", no_args_is_help=True)


@reports_app.command("verify")
def reports_verify(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A report as GET .../report returned it.")],
    public_key: Annotated[Path | None, typer.Option(
        "--public-key", exists=True, dir_okay=False,
        help="The JSON of GET /v1/signing-key (or a base64 public key) to trust; default: the key embedded in the "
             "report, which proves integrity but not who signed.")] = None,
) -> None:
    """Check a report's Ed25519 signature, offline. Exit 0 when valid, 1 when not."""
    from pydantic import ValidationError

    from domain.signing import key_id_of, verify
    from mcu_client import SigningKeys

    try:
        document = json.loads(file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        typer.echo(f"INVALID: {file} is not JSON ({error})", err=True)
        raise typer.Exit(1) from error
    trusted = None
    if public_key is not None:
        text = public_key.read_text().strip()
        try:  # the body of GET /v1/signing-key, or one base64 public key
            trusted = SigningKeys.model_validate_json(text).trusted()
        except ValidationError:
            try:
                trusted = {key_id_of(base64.b64decode(text, validate=True)): text}
            except ValueError as error:
                typer.echo(f"INVALID: {public_key} is neither GET /v1/signing-key's JSON nor a base64 key", err=True)
                raise typer.Exit(1) from error
    result = verify(document, trusted)
    typer.echo(f"{'VALID' if result.ok else 'INVALID'}: {result.reason} (key {result.key_id})",
               err=not result.ok)
    raise typer.Exit(0 if result.ok else 1)


@audit_app.command("verify")
def audit_verify(request_id: str | None = typer.Option(None, help="Only this request's chain.")) -> None:
    """Recompute every event's hash and link in the database; name the first broken event of each chain."""
    from cli.main import session_factory
    from models.audit import verify_chains

    with session_factory()() as session:
        check = verify_chains(session, request_id)
    for link in check.broken:
        typer.echo(f"BROKEN: request {link.request_id}, event {link.event_id}: {link.reason}", err=True)
    typer.echo(f"{check.events} events in {check.chains} chains checked, {len(check.broken)} broken")
    raise typer.Exit(1 if check.broken else 0)


@signing_app.command("rotate")
def signing_rotate() -> None:
    """Retire the current signing key and make a new one; reports signed before stay verifiable."""
    from cli.main import session_factory
    from domain.signing import SigningKeys
    from settings import get_settings

    typer.echo(SigningKeys(session_factory(), get_settings()).rotate())
