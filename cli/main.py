"""The `mcu` command."""

import typer

app = typer.Typer(help="Machine unlearning service (masked Mode Connectivity Unlearning).", no_args_is_help=True)


@app.command()
def demo(
    forget_class: int = typer.Option(3, help="Digit class to forget."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Forget one digit class of sklearn's digits with MCU(rl) and print the curve."""
    from cli.demo import run_library_demo

    run_library_demo(forget_class=forget_class, device=device)


@app.command()
def version() -> None:
    """Print the version."""
    from importlib.metadata import version as package_version

    typer.echo(package_version("mcu-service"))
