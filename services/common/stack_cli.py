"""`flowsentinel stack up|down|status`: the embedded local stack (Tansu broker, Redis) for an operator."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from services.common.settings import ENV_PREFIX, Settings, load_settings
from services.common.stack import (
    STACK_FILE,
    ManagedProcess,
    StackError,
    StackInfo,
    mask_url,
    read_stack,
    stack_status,
    start_stack,
    stop_stack,
)

# Seconds: until the stack answers (up), until a process exits before SIGKILL (down), per probe (status).
DEFAULT_TIMEOUTS = {"up": 30.0, "down": 10.0, "status": 3.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=tuple(DEFAULT_TIMEOUTS), help="start, stop or show the stack")
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for the stack to answer (up, default 30), for a process to exit before "
        "SIGKILL (down, default 10), or per probe (status, default 3)",
    )


def _stack_table(info: StackInfo) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column("part")
    table.add_column("address", no_wrap=True)
    table.add_column("pid")
    table.add_column("log", overflow="fold")
    table.add_row("broker", info.kafka_bootstrap, *_process_cells(info.broker))
    redis_address = escape(mask_url(info.redis_url.get_secret_value()))
    table.add_row("redis", redis_address, *_process_cells(info.redis))
    return table


def _process_cells(proc: ManagedProcess | None) -> tuple[str, str]:
    if proc is None:
        return "-", "[dim]was already running: not ours, left alone[/]"
    return str(proc.pid), escape(proc.log)


def _print_notes(console: Console, notes: list[str]) -> None:
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}")


def _up(settings: Settings, timeout: float, console: Console) -> int:
    info = start_stack(settings, timeout)
    state = f"already running since {info.started_at}" if info.reused else "started"
    console.print(f"[bold green]stack {state}[/] (run folder {escape(str(info.run_dir))})")
    console.print(_stack_table(info))
    _print_notes(console, info.notes)
    console.print(
        f"Services started with the same run folder find it through {STACK_FILE}; others need "
        f"{ENV_PREFIX}KAFKA_BOOTSTRAP and {ENV_PREFIX}REDIS_URL set to the addresses above."
    )
    return 0


def _down(settings: Settings, timeout: float, console: Console) -> int:
    info = read_stack(settings.run_dir.absolute())
    if info is None:
        console.print(f"no stack recorded in {escape(str(settings.run_dir.absolute()))}; nothing to stop")
        return 0
    for result in stop_stack(settings, timeout):
        console.print(f"{result.process.name} (pid {result.process.pid}): {result.outcome}")
    if info.redis is None:
        console.print(f"redis at {escape(mask_url(info.redis_url.get_secret_value()))}: not ours, left running")
    console.print("[bold]stack down[/]")
    return 0


def _status(settings: Settings, timeout: float, console: Console) -> int:
    status = stack_status(settings, timeout)
    if status.info is None:
        console.print(
            f"no stack recorded in {escape(str(status.run_dir))}; probing the configured addresses", style="dim"
        )
    else:
        console.print(f"stack started {status.info.started_at} (run folder {escape(str(status.run_dir))})")
        console.print(_stack_table(status.info))
        for name, alive in status.running.items():
            if not alive:
                console.print(f"[red]{name} process is gone[/]")
    for name, address, probe in (
        ("broker", status.kafka_bootstrap, status.broker),
        ("redis", mask_url(status.redis_url.get_secret_value()), status.redis),
    ):
        mark = "[green]answers[/]" if probe.ok else "[red]does not answer[/]"
        console.print(f"{name} {escape(address)}: {mark} ({escape(probe.detail)})")
    console.print("[bold green]healthy[/]" if status.healthy else "[bold red]unhealthy[/]")
    return 0 if status.healthy else 1


ACTIONS: dict[str, Callable[[Settings, float, Console], int]] = {"up": _up, "down": _down, "status": _status}


def run(args: argparse.Namespace) -> int:
    console = Console()
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUTS[args.action]
    try:
        return ACTIONS[args.action](load_settings(), timeout, console)
    except StackError as exc:
        Console(stderr=True).print(f"[bold red]stack {args.action} failed:[/] {escape(str(exc))}")
        return 1
