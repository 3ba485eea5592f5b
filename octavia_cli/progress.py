"""Progress on the terminal: a bar redrawn in place on a TTY, plain lines
otherwise (CI logs, pipes). Everything goes to stderr so that stdout keeps
only results (paths, tables, JSON)."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

REDRAW_EVERY_S = 0.1  # at most ten redraws a second on a TTY
LOG_EVERY_S = 5.0  # without a TTY: a line when something changes, but not more often than this for the same stage


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def bar(fraction: float, width: int = 24, fancy: bool = True) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    full = round(fraction * width)
    done, todo = ("█", "░") if fancy else ("#", "-")
    return done * full + todo * (width - full)


def enum_label(value: str, prefix: str) -> str:
    """`STAGE_EXTRACT_AUDIO` -> `extract audio`."""
    return (value or "").removeprefix(prefix).replace("_", " ").lower()


def job_line(state: str, percent: int, stage: str, message: str, *, width: int = 100, fancy: bool = True) -> str:
    """One line of a job's progress: state, bar, percent, stage and message, cut to `width`."""
    text = f"{enum_label(state, 'STATE_'):<10} {bar(percent / 100, 20, fancy)} {percent:>3}%"
    detail = enum_label(stage, "STAGE_")
    if message:
        detail = f"{detail}: {message}" if detail else message
    if detail:
        text += f"  {detail}"
    return text if len(text) <= width else text[: max(width - 1, 0)] + ("…" if fancy else "")


def _fancy(stream: TextIO) -> bool:
    return "utf" in (getattr(stream, "encoding", "") or "").lower()


class TransferProgress:
    """Bytes sent or received: call it with each chunk's size."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None, interactive: bool | None = None):
        self.label, self.total, self.done = label, total, 0
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.started = self._drawn = time.monotonic()
        self._fancy = _fancy(self.stream)
        if not self.interactive:
            size = f" ({human_bytes(total)})" if total else ""
            print(f"{label}{size} ...", file=self.stream, flush=True)

    def __call__(self, n: int, total: int | None = None) -> None:
        self.done += n
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self.interactive and now - self._drawn >= REDRAW_EVERY_S:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-6)
        if self.total:
            text = f"{self.label} {bar(self.done / self.total, 24, self._fancy)} {self.done * 100 // self.total:>3}%"
            text += f"  {human_bytes(self.done)} / {human_bytes(self.total)}"
        else:
            text = f"{self.label}  {human_bytes(self.done)}"
        text += f"  {human_bytes(rate)}/s"
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r\x1b[K" + text[:width])
        self.stream.flush()

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        if self.interactive:
            self._draw(time.monotonic())
            self.stream.write("\n")
        else:
            print(f"{self.label}: {human_bytes(self.done)} in {elapsed:.1f} s", file=self.stream)
        self.stream.flush()


class JobProgress:
    """The live view of WatchJob's events."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._fancy = _fancy(self.stream)
        self._live = False  # a redrawable line is on screen
        self._last: tuple[str, int, str, str] | None = None  # what the live line shows (None: redraw)
        self._shown: tuple[str, int, str, str] | None = None  # the latest known state and progress
        self._logged: tuple[str, str] | None = None
        self._logged_at = 0.0

    def update(self, event: dict) -> None:
        if event.get("type") == "JOB_EVENT_TYPE_HEARTBEAT" and self._last is not None:
            return
        job = event.get("job") or {}
        progress = event.get("progress") or job.get("progress")
        state = event.get("state") or job.get("state") or "STATE_UNSPECIFIED"
        if progress:
            now = (state, int(progress.get("percent") or 0), progress.get("stage") or "", progress.get("message") or "")
        else:  # an event without progress leaves it where it was
            now = (state, *(self._shown[1:] if self._shown else (0, "", "")))
        self._shown = now
        if now == self._last:
            return
        previous, self._last = self._last, now
        if self.interactive:
            # A new stage or state keeps the previous line as a record and starts a new one.
            if previous is not None and self._live and (previous[0], previous[2]) != (now[0], now[2]):
                self.stream.write("\n")
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r\x1b[K" + job_line(*now, width=width, fancy=self._fancy))
            self._live = True
        else:
            key, clock = (now[0], now[2]), time.monotonic()
            if key != self._logged or clock - self._logged_at >= LOG_EVERY_S or state_is_final(state):
                self._logged, self._logged_at = key, clock
                self.stream.write(job_line(*now, width=200, fancy=False) + "\n")
        self.stream.flush()

    def interrupt(self) -> None:
        """End the live line before something else is printed."""
        if self._live:
            self.stream.write("\n")
            self.stream.flush()
            self._live = False
            self._last = None  # redraw in full afterwards

    finish = interrupt


FINAL_STATES = ("STATE_SUCCEEDED", "STATE_FAILED", "STATE_CANCELLED")


def state_is_final(state: str) -> bool:
    return state in FINAL_STATES
