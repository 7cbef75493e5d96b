"""Streaming text with stop strings (pure functions, no torch).

A row's text is re-decoded from its tokens after every token; `find_stop` cuts it at the first
stop string, `visible_text` says how much may be sent now without sending a piece of a stop
string or half a UTF-8 character that the next token completes.
"""

from __future__ import annotations


def visible_text(text: str, stops: list[str], finished: bool) -> int:
    """How much of `text` may be streamed now: all of it once finished; otherwise hold back an
    incomplete UTF-8 character (decoded as U+FFFD) and any tail that could still grow into a
    stop string."""
    if finished:
        return len(text)
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, end), 0, -1):
            if text[end - k:end] == stop[:k]:
                hold = max(hold, k)
                break
    return end - hold


def find_stop(text: str, stops: list[str], start: int = 0) -> int:
    """Index of the earliest stop string in `text` at or after `start`, or -1."""
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else -1
