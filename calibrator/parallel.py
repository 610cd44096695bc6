"""Many LM-bound calls at once, on threads (the work is waiting on the network; the engine limits what is in flight).

Each task runs in a copy of the caller's context, so the active `dspy.context` (LM, adapter) carries into the
threads. `map_ordered` returns results in input order, so a concurrent run writes exactly what a sequential one
does; `imap_unordered` streams an iterable of any length with a bounded number of tasks pending, so memory stays
flat. A task that raises stops the whole map (queued tasks are cancelled) and the error reaches the caller.
"""

import contextvars
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


class Progress:
    """A tqdm bar whose postfix says how many LM calls are in flight (rate and ETA are tqdm's own)."""

    def __init__(self, total: int | None, desc: str, unit: str, show: bool, in_flight: Callable[[], int] | None,
                 initial: int = 0, leave: bool = True) -> None:
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not show, initial=initial, leave=leave, dynamic_ncols=True)
        self.in_flight = in_flight

    def step(self, **postfix: object) -> None:
        if self.in_flight is not None:
            postfix = {"in flight": self.in_flight(), **postfix}
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _submit(pool: ThreadPoolExecutor, fn: Callable[[T], R], item: T) -> Future:
    return pool.submit(contextvars.copy_context().run, fn, item)


def map_ordered(fn: Callable[[T], R], items: list[T], *, concurrency: int, progress: Progress | None = None) -> list[R]:
    """`[fn(x) for x in items]`, `concurrency` at a time."""
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    futures = [_submit(pool, fn, item) for item in items]
    try:
        for future in _as_done(futures):
            future.result()
            if progress is not None:
                progress.step()
    except BaseException:
        _abandon(pool)
        raise
    pool.shutdown()
    return [f.result() for f in futures]


def _abandon(pool: ThreadPoolExecutor) -> None:
    """Stop at once: queued tasks are cancelled and running ones are not waited for (closing the LM engine wakes
    any that sleep in a backoff), so Ctrl-C or a stopped backend ends the command promptly."""
    pool.shutdown(wait=False, cancel_futures=True)


def _as_done(futures: list[Future]) -> Iterator[Future]:
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from done


def imap_unordered(fn: Callable[[T], R], items: Iterable[T], *, concurrency: int, pending: int | None = None) -> Iterator[tuple[T, R]]:
    """(item, fn(item)) in completion order, reading `items` lazily: at most `pending` (default 4 x concurrency)
    tasks are submitted and not yet yielded."""
    limit = pending or 4 * max(1, concurrency)
    source = iter(items)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    running: dict[Future, T] = {}
    try:
        exhausted = False
        while running or not exhausted:
            while not exhausted and len(running) < limit:
                item = next(source, _END)
                if item is _END:
                    exhausted = True
                else:
                    running[_submit(pool, fn, item)] = item
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            # finished work first: a failure among them must not drop an answer that already came back
            for future in sorted(done, key=lambda f: f.exception() is not None):
                item = running.pop(future)
                yield item, future.result()
    except BaseException:
        _abandon(pool)
        raise
    pool.shutdown()


_END = object()
