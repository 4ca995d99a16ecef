"""`mcu reports verify`, `mcu audit verify`, `mcu signing-key list|rotate`: checking the evidence.

A verifier trusts only keys it was given (a file, or the service's GET /v1/signing-key) or, for the audit
chain, the service's own key file or passphrase-protected key: a key embedded in the evidence proves nothing
about who made it. Exit 0 only when the evidence verifies; every refusal names what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

reports_app = typer.Typer(help="Proof-of-erasure reports.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained, sealed audit trail.", no_args_is_help=True)
signing_app = typer.Typer(help="The key that signs reports and seals audit chains.", no_args_is_help=True)

INVALID, UNTRUSTED = 1, 3  # exit codes (2 is a usage error)
PUBLIC_KEY_HELP = "The JSON of GET /v1/signing-key, or one base64 Ed25519 public key, to trust."


def _refuse(message: str, code: int = INVALID) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)


def _trusted_from_file(path: Path) -> tuple[dict[str, str], str]:
    from domain.signing import trusted_keys

    try:
        return trusted_keys(path.read_text(encoding="utf-8", errors="replace"))
    except ValueError as error:
        raise _refuse(f"INVALID: {path} is {error}") from error


@reports_app.command("verify")
def reports_verify(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A report as GET .../report returned it.")],
    public_key: Annotated[
        Path | None, typer.Option("--public-key", exists=True, dir_okay=False, help=PUBLIC_KEY_HELP)
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", envvar="MCU_URL", help="Trust the keys the service at URL publishes (GET /v1/signing-key)."
        ),
    ] = None,
) -> None:
    """Check a report's Ed25519 signature with trusted keys, offline with --public-key. Exit 0 when valid, 1 when
    not, 3 when no trusted key was given and the signature matches only the key embedded in the report."""
    from domain.signing import MalformedDocument, parse_document
    from mcu_client import verify_report as verify  # the one verifier, the client's

    try:
        document = parse_document(file.read_bytes())
    except MalformedDocument as error:
        raise _refuse(f"INVALID: {file} is not a well-formed report: {error}") from error
    if public_key is not None:
        trusted, _ = _trusted_from_file(public_key)
    elif url is not None:
        import httpx

        from mcu_client import Client, McuError

        try:
            with Client(url) as client:
                trusted = client.signing_keys().trusted()
        except (McuError, httpx.HTTPError) as error:
            raise _refuse(f"INVALID: could not read the trusted keys from {url}: {error}") from error
    else:
        signature = document.get("signature") if isinstance(document, dict) else None
        # (verify refuses a signature whose fields are not all strings before reading `embedded`)
        embedded: dict[Any, Any] = (
            {signature.get("key_id"): signature.get("public_key")} if isinstance(signature, dict) else {}
        )
        result = verify(document, embedded)
        if not result.ok:
            raise _refuse(f"INVALID: {result.reason} (key {result.key_id})")
        raise _refuse(
            f"UNTRUSTED: the signature matches only the key embedded in the report (key "
            f"{result.key_id}), which proves nothing about who signed; give --public-key FILE or "
            f"--url URL",
            UNTRUSTED,
        )
    result = verify(document, trusted)
    if not result.ok:
        raise _refuse(f"INVALID: {result.reason} (key {result.key_id})")
    typer.echo(f"VALID: {result.reason} (key {result.key_id})")


@audit_app.command("verify")
def audit_verify(
    request_id: str | None = typer.Option(None, help="Only this request's chain."),
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            exists=True,
            dir_okay=False,
            help="Check the seals with this key (GET /v1/signing-key's current key, or base64) instead of the "
            "service's own key file or passphrase-protected key.",
        ),
    ] = None,
) -> None:
    """Recompute every event's hash and link and check each request's seal over its chain's length and head;
    name the first fault of each broken chain."""
    from cli.main import session_factory
    from domain.signing import SigningKeys, public_from_b64
    from models.audit import verify_chains
    from settings import get_settings

    factory = session_factory()
    if public_key is not None:
        keys, current = _trusted_from_file(public_key)
        key = public_from_b64(keys[current])
    else:
        try:
            key = SigningKeys(factory, get_settings()).verifying_key()
        except (RuntimeError, ValueError, TypeError) as error:
            raise _refuse(f"BROKEN: the service's signing key cannot be loaded to check the seals: {error}") from error
    with factory() as session:
        check = verify_chains(session, key, request_id)
    for link in check.broken:
        at = f", event {link.event_id}" if link.event_id is not None else ""
        typer.echo(f"BROKEN: request {link.request_id}{at}: {link.reason}", err=True)
    typer.echo(f"{check.events} events in {check.chains} chains checked, {len(check.broken)} broken")
    raise typer.Exit(INVALID if check.broken else 0)


@signing_app.command("list")
def signing_list(
    url: Annotated[
        str | None, typer.Option("--url", envvar="MCU_URL", help="The service (GET /v1/signing-key).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The API's JSON: save it for `mcu reports verify --public-key FILE`.")
    ] = False,
) -> None:
    """The public keys that verify reports, as the service publishes them: the current one and every retired one
    (no API key needed)."""
    from rich.table import Table

    from cli.client_commands import connect, emit, errors, show

    with connect(url, None) as client:
        keys = client.signing_keys()
    if as_json:
        return emit(keys)
    table = Table("key id", "algorithm", "public key (base64)", "created", "status")
    for key in keys.keys:
        retired = f"retired {key.retired_at:%Y-%m-%d %H:%M}" if key.retired_at else "retired"
        status = "current" if key.key_id == keys.current.key_id else retired
        table.add_row(key.key_id, key.algorithm, key.public_key, f"{key.created_at:%Y-%m-%d %H:%M}", status)
    show(table)
    errors.print("To check reports offline: --json > keys.json, then mcu reports verify REPORT --public-key keys.json")


@signing_app.command("rotate")
def signing_rotate() -> None:
    """Retire the current signing key and make a new one; reports signed before stay verifiable, and every
    audit chain that verifies is re-sealed with the new key."""
    from cli.main import session_factory
    from domain.signing import SigningKeys
    from settings import get_settings

    rotation = SigningKeys(session_factory(), get_settings()).rotate()
    typer.echo(rotation.key_id)
    chains = rotation.chains
    typer.echo(
        f"{chains.sealed} audit chains sealed with the new key, {len(chains.first_sealed)} of them for the "
        f"first time (made before migration 0008): {', '.join(chains.first_sealed) or 'none'}",
        err=True,
    )
    for link in chains.broken:
        typer.echo(f"BROKEN, not re-sealed: request {link.request_id}: {link.reason}", err=True)
