"""``lab``: start, stop, inspect and switch the lab, and run the workshop tools.

Commands here stay thin: read the settings, pick the target, call it, print.
Every command, the workshop tools included, runs under one error policy
(``reports_lab_errors``): an expected failure (``LabError``, the renderer's
``RenderError``) is one ``lab:`` line on stderr and its exit code, never a
traceback. Commands that change the lab hold its lock (``state.exclusive``).
The workshop tools keep heavy imports (matplotlib) inside their commands, so
``lab status`` stays fast.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, ParamSpec

import typer
from rich.console import Console
from rich.table import Table

from lab.errors import LabError
from lab.routing import MAX_REPLICAS, MODES, RenderError
from lab.servers import all_servers, check_choice
from lab.settings import LabSettings
from lab.targets import (
    ScalableTarget,
    ServerTarget,
    StatusDict,
    Target,
    get_target,
    state,
    target_name,
)
from lab.targets.switching import check_mode, parse_replicas, parse_weights

P = ParamSpec("P")
err = Console(stderr=True, soft_wrap=True)


def reports_lab_errors(command: Callable[P, None]) -> Callable[P, None]:
    """A LabError (or RenderError) becomes its message on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except LabError as exc:
            err.print(f"[red]lab:[/red] {exc}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except RenderError as exc:
            err.print(f"[red]lab:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


app = typer.Typer(
    name="lab",
    help="Gateway Lab: one demo app behind nginx as CGI, WSGI and ASGI.",
    no_args_is_help=True,
    add_completion=False,
)


def current_target(cfg: LabSettings) -> Target:
    return get_target(state.current_target_name(cfg))


@app.command()
@reports_lab_errors
def up(
    target: Annotated[
        str | None, typer.Option(help="docker, swarm or native (default: LAB_TARGET, else auto)")
    ] = None,
) -> None:
    """Start the lab; return once every service is healthy. Idempotent."""
    cfg = LabSettings.from_env()
    name = target_name(target) if target else state.current_target_name(cfg)
    with state.exclusive(cfg, "up"):
        get_target(name).up(cfg)
        state.record_target(cfg, name)


@app.command()
@reports_lab_errors
def down() -> None:
    """Stop what `lab up` started, nothing else."""
    cfg = LabSettings.from_env()
    with state.exclusive(cfg, "down"):
        current_target(cfg).down(cfg)
        state.clear_target(cfg)


@app.command()
@reports_lab_errors
def status(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """What runs where: target, URL, active mode, services, workers, limits."""
    cfg = LabSettings.from_env()
    info = current_target(cfg).status(cfg)
    if as_json:
        print(json.dumps(info))
    else:
        Console().print(status_table(info))


@app.command()
@reports_lab_errors
def switch(mode: Annotated[str, typer.Argument(help=f"one of {', '.join(MODES)}")]) -> None:
    """Make MODE the default of `/`; returns once the switch is in effect."""
    check_mode(mode)  # bad input: a UsageError before anything changes
    cfg = LabSettings.from_env()
    with state.exclusive(cfg, "switch"):
        current_target(cfg).switch(cfg, mode)


@app.command()
@reports_lab_errors
def split(
    weights: Annotated[
        str,
        typer.Argument(
            help="percent per mode summing to 100, e.g. wsgi=90,asgi=10; "
            '"" goes back to the plain mode'
        ),
    ],
) -> None:
    """Split `/` by weight (canary routing); returns once the split is in effect.

    Each request without X-Lab-Mode header or lab_mode cookie goes to a mode
    with the given probability (nginx's split_clients on the request id).
    `lab split ""` ends the split: `/` goes back to the mode active before it.
    `lab status` shows an active split as its label, e.g. wsgi=90,asgi=10.
    """
    parsed = parse_weights(weights)  # bad weights: a UsageError before anything changes
    cfg = LabSettings.from_env()
    with state.exclusive(cfg, "split"):
        current_target(cfg).split(cfg, parsed)


@app.command()
@reports_lab_errors
def scale(
    mode: Annotated[str, typer.Argument(help=f"one of {', '.join(MODES)}")],
    replicas: Annotated[str, typer.Argument(help=f"gateways of MODE to run, 1..{MAX_REPLICAS}")],
) -> None:
    """Run REPLICAS gateways of MODE behind nginx; returns once nginx uses them all.

    nginx spreads the mode's requests over the replicas (round robin); each
    answer's X-Gateway-Host and X-Gateway-Worker say which one served it.
    Scaling down takes the surplus out of nginx first, then stops it: no
    request is dropped. `lab status` shows the replicas per mode.
    """
    check_mode(mode)  # bad input: a UsageError before anything changes
    count = parse_replicas(replicas)
    cfg = LabSettings.from_env()
    target = current_target(cfg)
    if not isinstance(target, ScalableTarget):
        raise LabError(f"the {target.name} target cannot run replicas")
    with state.exclusive(cfg, "scale"):
        target.scale(cfg, mode, count)


@app.command()
@reports_lab_errors
def server(
    mode: Annotated[str, typer.Argument(help=f"one of {', '.join(MODES)}")],
    name: Annotated[str, typer.Argument(metavar="SERVER", help=all_servers())],
) -> None:
    """Put SERVER behind MODE's route; returns once the new server answers.

    The new server starts beside the old one; once it answers /healthz, nginx
    is pointed at it (a graceful reload) and the old one is stopped: no
    request is dropped. Kept across nginx restarts; `lab up` starts each mode
    under LAB_SERVER_<MODE>, else the last choice, else the default. Every
    answer's X-Gateway-Server says which server ran it.
    """
    check_mode(mode)  # bad input: UsageError (a LabError) before anything changes
    check_choice(mode, name)
    cfg = LabSettings.from_env()
    target = current_target(cfg)
    if not isinstance(target, ServerTarget):
        raise LabError(f"the {target.name} target cannot swap servers")
    with state.exclusive(cfg, "server"):
        target.server(cfg, mode, name)


@app.command()
@reports_lab_errors
def logs(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep following")] = False,
) -> None:
    """Print the logs of nginx and the gateways."""
    cfg = LabSettings.from_env()
    current_target(cfg).logs(cfg, follow)


def status_table(info: StatusDict) -> Table:
    running = "[green]running[/green]" if info["running"] else "[red]not running[/red]"
    table = Table(title=f"Gateway Lab ({info['target']}, {running})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("url", info["url"])
    table.add_row("tls_url (HTTP/2)", info["tls_url"])
    table.add_row("ca_file", info["ca_file"])
    # active_mode is a mode, or the label of a split such as "wsgi=90,asgi=10".
    table.add_row("active mode of /", str(info["active_mode"] or "-"))
    replicas = info.get("replicas", {})
    servers = info.get("servers", {})
    workers = info.get("workers", {})
    for mode in MODES:
        where = info["gateways"].get(mode, "(no HTTP address)")
        if mode in servers:
            where = f"{servers[mode]}: {where}"
        if replicas.get(mode, 1) > 1:
            where += f" + {replicas[mode] - 1} replica(s)"
        if mode in workers:
            where += f", {workers[mode]} worker(s)"
        table.add_row(f"gateway {mode}", where)
    if down := [name for name, ok in info.get("services", {}).items() if not ok]:
        table.add_row("not answering", ", ".join(down))
    # Swarm: each replica (slot) and the node it runs on; where the ports are open.
    for service, tasks in sorted(info.get("tasks", {}).items()):
        table.add_row(service, ", ".join(f"{t['slot']} on {t['node']}" for t in tasks))
    if published := info.get("published"):
        table.add_row("published", published)
    for key, value in info["limits"].items():
        table.add_row(key, str(value))
    return table


def register_tools(target_app: typer.Typer) -> None:
    """The workshop experiments: each module adds its own command under this error policy."""
    from lab.workshop import bench, claims, timeline

    for tool in (bench, timeline, claims):
        tool.register(target_app, reports_lab_errors)


def main() -> None:
    register_tools(app)
    app(prog_name="lab")


if __name__ == "__main__":
    main()
