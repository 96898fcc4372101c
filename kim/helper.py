"""A service's helper process: a second CPU for its costliest work (validating events, computing persons)."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any


def has_second_cpu() -> bool:
    return len(os.sched_getaffinity(0)) >= 2


def helper_process(initializer: Callable[..., None] | None = None,
                   initargs: tuple[Any, ...] = (), *, fork: bool = False) -> ProcessPoolExecutor | None:
    """One worker process, started now; None on a machine with a single CPU, where it would only add
    the cost of handing work over. The caller shuts it down; it also exits when the service dies.

    `fork`: a copy of this process, working at once, where a spawned one first imports the service
    again (~0.8 s while the service itself starts). Only while this process has no other thread: a
    lock held by another thread at the fork would stay held in the copy for ever."""
    if not has_second_cpu():
        return None
    method = "fork" if fork and threading.active_count() == 1 else "spawn"
    helper = ProcessPoolExecutor(1, mp_context=get_context(method), initializer=_start,
                                 initargs=(os.getpid(), gc.get_threshold(), initializer, initargs))
    helper.submit(int)  # starts it while the service starts
    return helper


def _start(parent: int, gc_threshold: tuple[int, ...], initializer: Callable[..., None] | None,
           initargs: tuple[Any, ...]) -> None:
    # A forked copy inherits the service's signal handlers (uvicorn's would only stop the copy's server)
    # and its event loop's wake-up descriptor (the signals it gets would wake the service's loop).
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    exit_with(parent)
    if initializer is not None:
        initializer(*initargs)
    settle(gc_threshold)


def exit_with(parent: int) -> None:
    """A service killed outright (SIGKILL) cannot stop its helper, which would wait for work for ever:
    the helper watches its parent and exits when it is gone."""
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def settle(gc_threshold: tuple[int, ...]) -> None:
    """At the end of a helper's start-up."""
    gc.freeze()  # what start-up made lives for ever: never scan it again
    gc.set_threshold(*gc_threshold)  # the service's choice holds for its helper


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)
