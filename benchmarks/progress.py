"""The rich progress bar shown on stderr while jobs run (one task per item, advancing per call)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class BenchProgress:
    def __init__(self, enabled: bool = True):
        self.console = Console(stderr=True)
        self._progress = Progress(TextColumn("[progress.description]{task.description:<44}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                                  disable=not enabled)
        self._task = None

    @contextmanager
    def item(self, description: str, total: int | None):
        self._task = self._progress.add_task(description, total=total)
        try:
            yield self.tick
        finally:
            self._progress.update(self._task, visible=True)

    def tick(self) -> None:
        if self._task is not None:
            self._progress.advance(self._task)

    def note(self, message: str) -> None:
        self._progress.console.print(message)

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)
