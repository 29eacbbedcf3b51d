"""``fedctl tui``: the federation's health in the terminal (Textual).

The app owns the data source, the poll loop and the actions; screens and
views get the latest :class:`~tui.model.Snapshot` through the reactive
``snapshot`` attribute and send requests up as messages.

Polling: one poll at a time, in a thread worker; the next one is armed only
when the previous one has finished (a slow router stretches the cycle
instead of stacking calls), and ``r`` during a poll only asks for another one
right after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.reactive import var
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from federation.errors import FederationError
from tui.config import Context, TuiConfig, load_contexts, load_tui_config, shard_stores
from tui.model import Snapshot
from tui.poller import ACTIONS, Action, OwnerLookup, Poller, Wants, run_action
from tui.screens import ConfirmScreen, HelpScreen, LogsScreen, MainScreen, WorkerDetailScreen
from tui.source import RouterSource, Source, open_source

log = logging.getLogger("tui")


class Polled(Message):
    def __init__(self, snapshot: Snapshot, poller: Poller) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.poller = poller


class ActionDone(Message):
    def __init__(self, ok: bool, text: str) -> None:
        super().__init__()
        self.ok = ok
        self.text = text


class FederationApp(App[int]):
    """The TUI; ``source`` is a :class:`~tui.source.RouterSource` or a :class:`~tui.source.ReplaySource`."""

    CSS_PATH = "tui.tcss"
    TITLE = "fedctl tui"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("f", "toggle_faults", "Faults"),
        Binding("r", "refresh", "Refresh"),
        Binding("p", "pause_toggle", "Pause"),
        Binding("q", "quit", "Quit"),
    ]

    snapshot: var[Snapshot | None] = var(None, always_update=True)
    faults_only: var[bool] = var(False)

    def __init__(
        self,
        source: Source,
        config: TuiConfig | None = None,
        *,
        contexts: tuple[Context, ...] = (),
        context: str | None = None,
        connect: Callable[[Context], Source] | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.config = config or TuiConfig()
        self.poller = Poller(source, self.config)
        #: the federations ``:ctx`` switches between; ``context`` is the one on show
        self.contexts = contexts
        self.context: Context | None = next((c for c in contexts if c.name == context), None) or (
            contexts[0] if contexts else None
        )
        #: how :ctx reaches another federation (tests connect to replays)
        self.connect = connect or (lambda ctx: RouterSource(ctx.router, timeout=self.config.timeout))
        self._seed_stores()
        self.owner_lookup = OwnerLookup()
        self.polls = 0
        self._timer: Timer | None = None
        self._polling = False
        self._poll_again = False

    def get_default_screen(self) -> Screen[Any]:
        return MainScreen()

    def on_ready(self) -> None:
        self.poll_now()

    # -- polling -------------------------------------------------------------------------------
    def wants(self) -> Wants:
        """What the screen on top needs fetched besides the header's data."""
        screen = self.screen
        for s in reversed(self.screen_stack):
            if not s.is_modal:
                screen = s
                break
        if isinstance(screen, MainScreen):
            tasks, workers = screen.wants()
            return Wants(tasks=tasks, workers_running=workers)
        return Wants(workers_running=isinstance(screen, WorkerDetailScreen))

    def poll_now(self) -> None:
        """Poll as soon as possible (right away, or just after the poll in flight)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._polling:
            self._poll_again = True
            return
        if not self.screen_stack:
            return  # the app is shutting down: a queued refresh has nothing left to draw on
        self._polling = True
        self._poll(self.wants())

    @work(thread=True, exclusive=True, exit_on_error=False, group="poll")
    def _poll(self, wants: Wants) -> None:
        poller = self.poller
        self.post_message(Polled(poller.poll(wants), poller))

    def on_polled(self, message: Polled) -> None:
        if message.poller is not self.poller:
            return  # an answer from the federation shown before :ctx switched
        self.polls += 1
        self.snapshot = message.snapshot

    # -- contexts and logs ------------------------------------------------------------------------
    def _seed_stores(self) -> None:
        if self.context is not None and self.context.config:
            try:
                self.poller.tracker.stores.update(shard_stores(self.context.config))
            except FederationError as e:
                log.warning("cannot read the stores of %s: %s", self.context.config, e)

    def switch_context(self, name: str) -> None:
        """``:ctx NAME``: show another federation of the config (a fresh poller: no deltas across)."""
        ctx = next((c for c in self.contexts if c.name == name), None)
        if ctx is None:
            names = ", ".join(c.name for c in self.contexts) or "none in the config"
            self.notify(f"no context {name!r} ({names}); name them in [tui.contexts]", severity="error")
            return
        if self.context is not None and ctx.name == self.context.name:
            self.notify(f"already on {ctx.name}")
            return
        old = self.source
        self.source = self.connect(ctx)
        self.poller = Poller(self.source, self.config)
        self.owner_lookup = OwnerLookup()
        self.context = ctx
        self._seed_stores()
        old.close()
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.snapshot = None
        self.notify(f"context {ctx.name}: {ctx.router}")
        self.poll_now()

    def log_files(self) -> list[Path]:
        """``fedctl up``'s log files of the federation on show: router first, then shards by name."""
        folder = self.context.log_dir if self.context is not None else None
        if folder is None or not folder.is_dir():
            return []
        files = sorted(folder.glob("*.log"), key=lambda f: (f.stem != "router", f.stem))
        return files

    def open_logs(self, name: str | None = None) -> None:
        files = self.log_files()
        if not files:
            where = self.context.log_dir if self.context is not None else None
            self.notify(
                f"no fedctl up logs in {where}"
                if where
                else "no logs known: start the tui with "
                "--config <data dir>/federation.toml (fedctl up's logs are next to it)",
                severity="warning",
            )
            return
        stems = [f.stem for f in files]
        if name is not None and name not in stems:
            self.notify(f"no log {name!r} ({', '.join(stems)})", severity="error")
            return
        self.push_screen(LogsScreen(files, stems.index(name) if name else 0))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "poll" or event.state not in (
            WorkerState.SUCCESS,
            WorkerState.ERROR,
            WorkerState.CANCELLED,
        ):
            return
        if event.state == WorkerState.ERROR:
            # a bug, not a federation problem (those are in the snapshot): say so and keep polling
            log.error("poll failed", exc_info=event.worker.error)
            self.notify(f"poll failed: {event.worker.error!r}", severity="error", timeout=5)
        self._polling = False
        if self._poll_again:
            self._poll_again = False
            self.poll_now()
        elif self.is_running:
            self._timer = self.set_timer(self.config.refresh, self.poll_now)

    def set_refresh(self, seconds: float) -> None:
        self.config = self.config.replace(refresh=seconds)
        self.poller.config = self.config
        self.notify(f"refreshing every {seconds:g}s")

    # -- keys ----------------------------------------------------------------------------------
    def action_refresh(self) -> None:
        self.poll_now()

    def action_toggle_faults(self) -> None:
        self.faults_only = not self.faults_only
        if isinstance(self.screen, MainScreen):
            tasks, _ = self.screen.wants()
            if tasks is not None:
                self.poll_now()  # faults-only narrows the task list on the router

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        keys = []
        seen = set()
        for active in self.screen.active_bindings.values():
            b = active.binding
            if not b.description or b.action in ("help", "app.help") or not _declared_here(active.node, b):
                continue  # Textual's own bindings (focus, copy, palette...) are not this app's keys
            display = b.key_display or self.get_key_display(b)
            if (display, b.description) not in seen:
                seen.add((display, b.description))
                keys.append((display, b.description))
        keys += [("Enter", "open the selected row"), ("Esc", "clear the filter, then go back")]
        self.push_screen(HelpScreen(keys, getattr(self.screen, "view_label", "")))

    def action_pause_toggle(self) -> None:
        snap = self.snapshot
        self.request_action("unpause" if snap is not None and snap.paused else "pause", None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pause_toggle":
            if self.config.readonly:
                return False
            snap = self.snapshot
            return None if snap is not None and snap.pause_enabled is False else True
        return True

    # -- actions -------------------------------------------------------------------------------
    def request_action(self, name: str, task_id: str | None) -> None:
        """Ask for confirmation, then run the action off the UI thread."""
        if self.config.readonly:
            self.notify("read-only: actions are disabled", severity="warning")
            return
        action = ACTIONS[name]

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._run_action(action, task_id)

        self.push_screen(ConfirmScreen(action, task_id, self.command_for(action, task_id)), confirmed)

    def command_for(self, action: Action, task_id: str | None) -> str:
        """The ``fedctl`` command line that does what ``action`` does (shown in the dialog first)."""
        import shlex

        router = self.context.router if self.context is not None else self.source.name
        words = ["fedctl", "call", action.method]
        if action.needs_task and task_id:
            words.append(f"task_id={task_id}")
        if not router.startswith("replay:"):
            words += ["--router", router]
        return shlex.join(words)

    @work(thread=True, exit_on_error=False, group="action")
    def _run_action(self, action: Action, task_id: str | None) -> None:
        ok, text = run_action(self.source, action, task_id)
        self.post_message(ActionDone(ok, text))

    def on_action_done(self, message: ActionDone) -> None:
        self.notify(message.text, severity="information" if message.ok else "error", timeout=6)
        self.poll_now()


def _declared_here(node: Any, binding: Binding) -> bool:
    """True when ``binding`` comes from a ``BINDINGS`` list of one of this package's classes."""
    for cls in type(node).__mro__:
        if not cls.__module__.startswith("tui."):
            continue
        for declared in cls.__dict__.get("BINDINGS", ()):
            if (
                isinstance(declared, Binding)
                and declared.action == binding.action
                and binding.key in declared.key.split(",")
            ):
                return True
    return False


def run(
    router: str | None = None,
    refresh: float | None = None,
    readonly: bool | None = None,
    *,
    config_path: str | None = None,
    timeout: float | None = None,
    replay: str | None = None,
    record: str | None = None,
    curve: Any = None,
) -> int:
    """Entry point of ``fedctl tui``: build the source and run the app until the user quits.

    Raises :class:`~federation.errors.ConfigError` for a bad flag or file, before
    the terminal is taken over.
    """
    # --readonly can only make the app stricter than the file
    config = load_tui_config(config_path).replace(refresh=refresh, readonly=readonly or None, timeout=timeout)
    contexts = load_contexts(config_path, router or "") if not replay else ()
    source = open_source(router, replay=replay, record=record, timeout=config.timeout, curve=curve)
    try:
        current = next((c.name for c in contexts if c.router == router), None)
        result = FederationApp(source, config, contexts=contexts, context=current).run()
    finally:
        source.close()
    return int(result or 0)
