"""The ``parloa-bridge`` command line. Exit codes: 0 success, 2 bad configuration or usage,
1 anything else. Errors a user can fix are one readable line, not a traceback."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from bridge import healthcheck
from bridge.channels import validate_channel
from bridge.config import BridgeConfig, ConfigError, config_path, load_config
from bridge.engine.intake import requester_id
from bridge.lifecycle import Lifecycle
from bridge.logsetup import configure_logging
from bridge.parts import open_database, open_sql_engine, start_clients, start_simulator_if_enabled
from bridge.service import Service
from bridge.store.database import migrate
from bridge.store.errors import StoreError
from bridge.terminal_chat import ChatAborted, TerminalChat
from bridge.textchat.context import build_context
from bridge.tracing import TracingUnavailable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

log = logging.getLogger("bridge.cli")


class UsageError(Exception):
    """A mistake in how the command was called."""


def _fail(message: str, code: int) -> int:
    print(f"parloa-bridge: {message}", file=sys.stderr)
    return code


def _load(args: argparse.Namespace) -> BridgeConfig:
    return load_config(config_path(args.config), validate_channel=validate_channel)


def _run_until_signal(main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main`` on a fresh loop; SIGTERM/SIGINT cancel it (its finally blocks clean up)."""

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await main()
        except asyncio.CancelledError:
            return EXIT_OK
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    return asyncio.run(runner())


# --- commands ---------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    print(f"configuration {config_path(args.config)} is valid:")
    print(json.dumps(config.summary(), indent=2, default=str))
    for note in config_notes(config):
        print(f"note: {note}")
    return EXIT_OK


def config_notes(config: BridgeConfig) -> list[str]:
    """What a valid configuration leaves off that an operator may expect on."""
    notes = []
    if config.admin.token is None:
        notes.append("the admin API and console (/admin/) are disabled: set [admin] token")
    if config.http.public_url is None:
        notes.append(
            "[http] public_url is not set: attachment URLs name the address the bridge "
            "listens on, which Parloa may not reach"
        )
    return notes


def cmd_simulator(args: argparse.Namespace) -> int:
    # A developer tool: imported for this command only.
    from bridge.devtools.simulator import Faults, SimulatorState, serve_forever

    configure_logging(args.log_level, secrets=[args.token] if args.token else [])
    faults = Faults(
        latency=args.latency,
        latency_max=args.latency_max,
        failure_rate=args.failure_rate,
        failure_status=args.failure_status,
    )
    state = SimulatorState(
        token=args.token,
        faults=faults,
        max_sessions=args.max_sessions,
        session_ttl=args.session_ttl,
    )

    async def main() -> int:
        await serve_forever(args.host, args.port, state)
        return EXIT_OK

    return _run_until_signal(main)


def _pick_bot(config: BridgeConfig, name: str | None) -> str:
    if name:
        if name not in config.bots:
            known = ", ".join(sorted(config.bots)) or "none"
            raise UsageError(f"no bot named {name!r} in the configuration (bots: {known})")
        return name
    if len(config.bots) == 1:
        return next(iter(config.bots))
    if not config.bots:
        raise UsageError("the configuration has no [bots.NAME] section to chat with")
    raise UsageError(f"several bots are configured; pick one with --bot ({', '.join(config.bots)})")


def cmd_chat(args: argparse.Namespace) -> int:
    config = _load(args)
    bot_name = _pick_bot(config, args.bot)
    bot = config.bots[bot_name]
    configure_logging(args.log_level or "WARNING", config.logging.format, config.secrets())
    user = args.requester or getpass.getuser()
    context = build_context(
        {"platform": "terminal", "userName": user, "chatType": "private"}, bot.context
    )

    async def main() -> int:
        async with Lifecycle(log) as parts:
            await start_simulator_if_enabled(config.simulator, parts)
            client = (await start_clients(config, parts, [bot_name]))[bot_name]
            print(f"chatting with bot {bot_name!r} at {client.url.split('?')[0]}; /help for help")
            chat = TerminalChat(
                client, requester_id=f"terminal:{user}", context=context, out=sys.stdout
            )
            try:
                return await chat.run()
            except ChatAborted as exc:
                return _fail(str(exc), EXIT_FAILURE)

    return _run_until_signal(main)


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    configure_logging(config.logging.level, config.logging.format, config.secrets())

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Service(config).run(stop, daemon=True)
        return EXIT_OK

    return asyncio.run(main())


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _load(args)
    configure_logging(config.logging.level, config.logging.format, config.secrets())

    async def main() -> int:
        async with Lifecycle(log) as parts:
            status = await migrate(open_sql_engine(config.database, parts, pool_size=1))
        print(f"database schema is at revision {status.current} (newest)")
        return EXIT_OK

    return asyncio.run(main())


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def cmd_inbox(args: argparse.Namespace) -> int:
    config = _load(args)
    configure_logging("WARNING", config.logging.format, config.secrets())

    async def main() -> int:
        async with Lifecycle(log) as parts:
            store = open_database(config.database, parts, pool_size=1).store
            if args.inbox_command == "list":
                rows = await store.dead_letters(args.channel, args.limit)
                if not rows:
                    print("no dead letters")
                for row in rows:
                    reason = " ".join((row.last_error or "").split())[:90]
                    print(
                        f"{row.id:>8}  {_when(row.created_at)}  {row.channel:<16} "
                        f"{row.kind:<8} {reason}"
                    )
            elif args.inbox_command == "show":
                item = await store.inbox_item(args.id)
                if item is None:
                    return _fail(f"no inbox item {args.id}", EXIT_FAILURE)
                data = {
                    "id": item.id,
                    "status": item.status,
                    "channel": item.channel,
                    "event_id": item.event_id,
                    "conversation_id": item.conversation_id,
                    "kind": item.kind,
                    "text": item.text,
                    "context": item.context,
                    "attempts": item.attempts,
                    "last_error": item.last_error,
                    "created_at": _when(item.created_at),
                    "finished_at": _when(item.finished_at),
                }
                print(json.dumps(data, indent=2, ensure_ascii=False))
            elif args.inbox_command == "discard":
                count = await store.discard_dead(args.ids)
                print(f"{count} dead letter(s) discarded")
                if count < len(set(args.ids)):
                    return _fail("some ids named no dead letter", EXIT_FAILURE)
            else:
                if not args.all and not args.ids:
                    raise UsageError("inbox retry: name dead-letter ids, or --all")
                count = await store.retry_dead(None if args.all else args.ids)
                print(f"{count} dead letter(s) queued again; a running bridge picks them up")
            return EXIT_OK

    return asyncio.run(main())


def cmd_erase(args: argparse.Namespace) -> int:
    config = _load(args)
    configure_logging("WARNING", config.logging.format, config.secrets())
    if not args.user:
        raise UsageError("erase: --user must name a user id")

    async def main() -> int:
        async with Lifecycle(log) as parts:
            store = open_database(config.database, parts, pool_size=1).store
            erased = await store.erase_user(
                args.channel, args.user, requester_id(args.channel, args.user)
            )
        print(f"erased user {args.user!r} of channel {args.channel!r}:")
        for table, count in erased.by_table().items():
            print(f"  {table:<14} {count}")
        return EXIT_OK

    return asyncio.run(main())


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parloa-bridge",
        description="Connects Parloa TextchatV2 bots to Telegram, Slack and a web chat.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            metavar="PATH",
            help="configuration file (default: $PARLOA_BRIDGE_CONFIG, then ./bridge.toml)",
        )

    p = sub.add_parser("run", help="the daemon: every configured channel until SIGTERM")
    with_config(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("migrate", help="bring the database schema to the newest revision")
    with_config(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("inbox", help="list, inspect, retry and discard dead letters")
    with_config(p)
    inbox_sub = p.add_subparsers(dest="inbox_command", metavar="ACTION")
    inbox_sub.required = True
    q = inbox_sub.add_parser("list", help="dead letters, oldest first")
    q.add_argument("--channel")
    q.add_argument("--limit", type=int, default=100)
    q = inbox_sub.add_parser("show", help="one inbox item in full")
    q.add_argument("id", type=int)
    q = inbox_sub.add_parser("retry", help="queue dead letters again")
    q.add_argument("ids", type=int, nargs="*")
    q.add_argument("--all", action="store_true")
    q = inbox_sub.add_parser("discard", help="delete dead letters for good")
    q.add_argument("ids", type=int, nargs="+")
    for q in (p,):
        q.set_defaults(func=cmd_inbox)

    p = sub.add_parser("erase", help="delete everything stored about one user of a channel")
    with_config(p)
    p.add_argument("--channel", required=True, metavar="NAME")
    p.add_argument("--user", required=True, metavar="ID", help="the user's id on the channel")
    p.set_defaults(func=cmd_erase)

    p = sub.add_parser("healthcheck", help="exit 0 when the bridge configured here is alive")
    with_config(p)
    p.add_argument("--timeout", type=float, default=4.0, metavar="SECONDS")
    p.set_defaults(func=lambda args: healthcheck.check(args.config, args.timeout))

    p = sub.add_parser("check-config", help="validate the configuration and print a summary")
    with_config(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("simulator", help="a local TextchatV2 server with a scripted demo bot")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", help="accept only this bearer token (default: any)")
    p.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    p.add_argument(
        "--latency-max",
        type=float,
        metavar="SECONDS",
        help="with --latency: a random latency between the two",
    )
    p.add_argument("--failure-rate", type=float, default=0.0, metavar="FRACTION")
    p.add_argument("--failure-status", type=int, default=503, metavar="STATUS")
    p.add_argument("--max-sessions", type=int, default=10_000)
    p.add_argument("--session-ttl", type=float, metavar="SECONDS")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_simulator)

    p = sub.add_parser("chat", help="talk to a configured Parloa release from the terminal")
    with_config(p)
    p.add_argument("--bot", metavar="NAME", help="which [bots.NAME] (default: the only one)")
    p.add_argument("--requester", metavar="ID", help="the user name sent to Parloa")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except StoreError as exc:
        return _fail(str(exc), EXIT_FAILURE)
    except TracingUnavailable as exc:  # OTEL_* asks for what cannot be had
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_OK
    except OSError as exc:
        # e.g. a port already in use
        return _fail(f"{exc.strerror or exc}", EXIT_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
