"""Per-file work shared between the job processes of ``dicomdrop process``.

``process`` runs one job per worker process, so that every stage (unpacking, grouping, packing
as well as de-identifying) uses all cores. Drops rarely divide evenly among the workers: five
patients on two cores leave one core idle while the fifth job runs alone, a fifth of the wall
time spent on one core. Here the per-file work of a stage (header reads, de-identification,
verification; whatever a stage hands its ``Executor.map``) is cut into chunks put on one queue
that every job process can take from:

- a job process that maps work (the *owner*) puts its chunks on the queue and, while it waits
  for their results, takes chunks from the queue itself, its own or another job's;
- a worker with no job of its own runs :func:`help_others`, which takes chunks until it is
  released (``Channels.release``: the run is over, or the worker is wanted for a job);
- whoever runs a chunk sends its results (or the exception it raised) to its owner's queue.

Nothing else changes hands: a chunk's function must be a module-level function whose effects
are named by its arguments (``deidentify_file`` writes into the spool named by its task), so it
gives the same result in any process. An owner leaves a map only when every chunk it queued has
answered, also when its caller stops reading early, so no chunk of a job runs after that job
has moved on. A chunk never waits for another, so owners waiting on each other cannot block.

Messages are pickled by the sender, so that something that cannot be pickled fails there, at
once, instead of in a queue's feeder thread where the owner would wait for it forever.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any, Final, TypeVar

log = logging.getLogger(__name__)

_T = TypeVar("_T")

POLL_SECONDS: Final = 0.005  # how long a waiting owner blocks on the task queue before it looks
# for its answers again (an answer waits at most this long to be read)


class WorkSharingError(RuntimeError):
    """A shared chunk failed in a way that could not be sent back as its own exception."""


@dataclass(frozen=True)
class Channels:
    """The queues of one run, made before its pool and handed to every worker at start."""

    tasks: Queue[bytes]
    results: tuple[Queue[bytes], ...]
    slots: Queue[int]
    release: Event  # set: helpers return after the chunk in hand

    @classmethod
    def make(cls, context: BaseContext, workers: int) -> Channels:
        """Channels for a pool of ``workers`` processes made from ``context``."""
        slots: Queue[int] = context.Queue()
        for slot in range(workers):
            slots.put(slot)
        return cls(
            tasks=context.Queue(),
            results=tuple(context.Queue() for _ in range(workers)),
            slots=slots,
            release=context.Event(),
        )

    def close(self) -> None:
        """Stop this process's use of the queues (their feeder threads end), after the run."""
        channels: list[Queue[Any]] = [self.tasks, *self.results, self.slots]
        for channel in channels:
            channel.close()
            channel.join_thread()


@dataclass(frozen=True)
class _Chunk:
    owner: int  # the slot whose result queue gets the answer
    batch: tuple[int, int]  # (owner pid, map number): answers of an earlier map are told apart
    index: int
    function: Callable[..., Any]
    items: list[tuple[Any, ...]]


_sharer: SharedExecutor | None = None


def join(channels: Channels) -> None:
    """Make this process one of the run's workers (a pool initializer): it takes a slot."""
    global _sharer
    _sharer = SharedExecutor(channels, channels.slots.get(timeout=60))


def current() -> SharedExecutor | None:
    """This process's executor when it is a worker of a sharing run, else None."""
    return _sharer


def help_others() -> int:
    """Run other jobs' chunks until released (a worker with no job of its own); how many."""
    sharer = _sharer
    if sharer is None:
        return 0
    return sharer.help_until_released()


class SharedExecutor(Executor):
    """An ``Executor`` whose ``map`` chunks may run in any worker of the run (module docstring).

    ``submit`` runs the call here, at once: the stages only map.
    """

    def __init__(self, channels: Channels, slot: int) -> None:
        self._channels = channels
        self._slot = slot
        self._maps = 0
        self._parent = os.getppid()

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        future: Future[_T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the future carries it, as a pool's would
            future.set_exception(exc)
        return future

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[_T]:
        """The results of ``fn`` over the items, in order (chunks queued at once)."""
        items = list(zip(*iterables, strict=False))
        size = max(1, chunksize)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        self._maps += 1
        batch = (os.getpid(), self._maps)
        for index, chunk in enumerate(chunks):
            self._channels.tasks.put(pickle.dumps(_Chunk(self._slot, batch, index, fn, chunk)))
        return self._gather(batch, len(chunks))

    def _gather(self, batch: tuple[int, int], count: int) -> Iterator[_T]:
        answers: dict[int, tuple[bool, Any]] = {}
        following = 0
        try:
            while following < count:
                while following in answers:
                    ok, payload = answers.pop(following)
                    following += 1
                    if not ok:
                        raise payload
                    yield from payload
                if following < count:
                    self._wait_for(batch, answers)
        finally:
            # Whatever the caller does, every chunk of this map has answered before it returns.
            missing = count - following - len(answers)
            while missing > 0:
                before = len(answers)
                self._wait_for(batch, answers)
                missing -= len(answers) - before
                answers.clear()

    def _wait_for(self, batch: tuple[int, int], answers: dict[int, tuple[bool, Any]]) -> None:
        """Take the next answer addressed to this map, running queued chunks meanwhile."""
        results = self._channels.results[self._slot]
        while True:
            try:
                message = results.get_nowait()
            except queue.Empty:
                self._run_one()
                continue
            answer_batch, index, ok, payload = pickle.loads(message)  # noqa: S301 - our own workers
            if answer_batch == batch:
                answers[index] = (ok, payload)
                return
            # An answer to an earlier map that was left early has nobody waiting: dropped.

    def _run_one(self) -> bool:
        """Run one queued chunk (anybody's); False when none came within the poll time."""
        try:
            message = self._channels.tasks.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if os.getppid() != self._parent:
                # The run's main process is gone: nobody will collect these jobs. Stopping here
                # is a kill like any other, which the next start of the service finishes.
                log.error("work sharing: the main process is gone; this worker stops")
                os._exit(1)
            return False
        chunk: _Chunk = pickle.loads(message)  # noqa: S301 - from our own workers
        try:
            answer = (chunk.batch, chunk.index, True, [chunk.function(*a) for a in chunk.items])
            reply = pickle.dumps(answer)
        except Exception as exc:  # the owner raises it, as a pool's map would
            try:
                reply = pickle.dumps((chunk.batch, chunk.index, False, exc))
            except Exception:  # an exception that does not pickle
                failure = WorkSharingError(f"{type(exc).__name__} in a shared chunk")
                reply = pickle.dumps((chunk.batch, chunk.index, False, failure))
        self._channels.results[chunk.owner].put(reply)
        return True

    def help_until_released(self) -> int:
        """Run queued chunks until ``release`` is set; how many ran. A chunk left on the queue
        then is run by its owner, which never waits for a helper."""
        ran = 0
        release = self._channels.release
        while not release.is_set():
            if self._run_one():
                ran += 1
        return ran

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to stop: the run's pool owns the processes."""
