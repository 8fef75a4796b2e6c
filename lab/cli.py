"""``lab``: start, stop, inspect and switch the lab. Each command delegates to a target.

Commands here stay thin: parse arguments, pick the target, call it, print.
The workshop experiments (bench, timeline, claims) add their commands from
their own modules through ``register(app)``; they keep heavy imports
(matplotlib) inside the command functions, so ``lab status`` stays fast.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, ParamSpec

import typer
from rich.console import Console
from rich.table import Table

from lab import state
from lab.config import MODES, LabConfig
from lab.nginx_conf import MAX_REPLICAS, RenderError
from lab.servers import all_servers, check_choice
from lab.target import (
    LabError,
    ScalableTarget,
    ServerTarget,
    StatusDict,
    Target,
    check_mode,
    get_target,
    parse_replicas,
    parse_weights,
    target_name,
)

P = ParamSpec("P")
err = Console(stderr=True, soft_wrap=True)


def reports_lab_errors(command: Callable[P, None]) -> Callable[P, None]:
    """A LabError becomes its message on stderr and exit status 1, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except (LabError, RenderError) as exc:
            err.print(f"[red]lab:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


app = typer.Typer(
    name="lab",
    help="Gateway Lab: one demo app behind nginx as CGI, WSGI and ASGI.",
    no_args_is_help=True,
    add_completion=False,
)


def current_target(cfg: LabConfig) -> Target:
    return get_target(state.current_target_name(cfg))


@app.command()
@reports_lab_errors
def up(
    target: Annotated[
        str | None, typer.Option(help="docker or native (default: LAB_TARGET, else auto)")
    ] = None,
) -> None:
    """Start the lab; return once every service is healthy. Idempotent."""
    cfg = LabConfig.from_env()
    name = target_name({"LAB_TARGET": target}) if target else state.current_target_name(cfg)
    get_target(name).up(cfg)
    state.record_target(cfg, name)


@app.command()
@reports_lab_errors
def down() -> None:
    """Stop what `lab up` started, nothing else."""
    cfg = LabConfig.from_env()
    current_target(cfg).down(cfg)
    state.clear_target(cfg)


@app.command()
@reports_lab_errors
def status(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """What runs where: target, URL, active mode, gateways, limits."""
    cfg = LabConfig.from_env()
    info = current_target(cfg).status(cfg)
    if as_json:
        print(json.dumps(info))
    else:
        Console().print(status_table(info))


@app.command()
@reports_lab_errors
def switch(mode: Annotated[str, typer.Argument(help=f"one of {', '.join(MODES)}")]) -> None:
    """Make MODE the default of `/`; returns once the switch is in effect."""
    if mode not in MODES:
        raise typer.BadParameter(f"{mode!r} is not a mode: use one of {', '.join(MODES)}")
    cfg = LabConfig.from_env()
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
    parsed = parse_weights(weights)  # bad weights: LabError before anything changes
    cfg = LabConfig.from_env()
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
    check_mode(mode)  # bad input: LabError before anything changes
    count = parse_replicas(replicas)
    cfg = LabConfig.from_env()
    target = current_target(cfg)
    if not isinstance(target, ScalableTarget):
        raise LabError(f"the {target.name} target cannot run replicas")
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
    check_mode(mode)  # bad input: LabError before anything changes
    check_choice(mode, name)
    cfg = LabConfig.from_env()
    target = current_target(cfg)
    if not isinstance(target, ServerTarget):
        raise LabError(f"the {target.name} target cannot swap servers")
    target.server(cfg, mode, name)


@app.command()
@reports_lab_errors
def logs(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep following")] = False,
) -> None:
    """Print the logs of nginx and the gateways."""
    cfg = LabConfig.from_env()
    current_target(cfg).logs(cfg, follow)


def status_table(info: StatusDict) -> Table:
    running = "[green]running[/green]" if info["running"] else "[red]not running[/red]"
    table = Table(title=f"Gateway Lab ({info['target']}, {running})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("url", info["url"])
    # active_mode is a mode, or the label of a split such as "wsgi=90,asgi=10".
    table.add_row("active mode of /", str(info["active_mode"] or "-"))
    replicas = info.get("replicas", {})
    servers = info.get("servers", {})
    workers = info.get("workers", {})
    for mode in MODES:
        where = info["gateways"].get(mode, "(no HTTP address)")
        if mode in servers:
            where = f"{servers[mode]}, {workers.get(mode, '?')} worker(s): {where}"
        if replicas.get(mode, 1) > 1:
            where += f" + {replicas[mode] - 1} replica(s)"
        table.add_row(f"gateway {mode}", where)
    for key, value in info["limits"].items():
        table.add_row(key, str(value))
    return table


def register_tools(target_app: typer.Typer) -> None:
    """The workshop experiments: each module adds its own command and options."""
    from lab import bench, claims, timeline

    for tool in (bench, timeline, claims):
        tool.register(target_app)


def main() -> None:
    register_tools(app)
    app(prog_name="lab")


if __name__ == "__main__":
    main()
