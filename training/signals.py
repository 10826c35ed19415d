"""Graceful stop: the first SIGINT (Ctrl-C) or SIGTERM asks the loop to stop after the current
step and save a checkpoint; a second one aborts at once (the last saved checkpoint stays
intact, because checkpoints are written atomically).
"""

from __future__ import annotations

import signal
import sys
import threading


class StopRequest:
    """Context manager installing the handlers; `.signal_number` is set once a stop is asked."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool = True):
        self.signal_number: int | None = None
        self.announce = announce
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def _handle(self, signum, frame) -> None:
        if self.signal_number is not None:  # second signal: stop now, without saving
            raise KeyboardInterrupt
        self.signal_number = signum
        if self.announce:
            print(
                f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
                "(send it again to abort without saving)",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> StopRequest:
        # Signal handlers can only be installed from the main thread (tests may use others).
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
