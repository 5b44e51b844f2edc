"""The background tasks every program's long-running loops are started with."""

import asyncio
import logging

import pytest

from fusionrack.tasks import BackgroundTasks


async def test_a_task_that_dies_is_logged_with_its_owner_name_and_traceback(caplog):
    tasks = BackgroundTasks("switch-1")

    async def broken():
        raise ValueError("the ticker lost its rack")

    with caplog.at_level(logging.ERROR, logger="fusionrack.tasks"):
        tasks.start("ticker", broken())
        for _ in range(10):
            await asyncio.sleep(0)
    [record] = caplog.records
    assert record.getMessage() == "switch-1: background task ticker died"
    assert "the ticker lost its rack" in caplog.text
    assert tasks.names() == []
    await tasks.stop()


async def test_stop_cancels_every_task_and_waits_for_their_cleanup():
    tasks = BackgroundTasks("controller")
    cleaned = []

    async def loop(name):
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)
            cleaned.append(name)

    tasks.start("reconcile", loop("reconcile"))
    tasks.start("prune", loop("prune"))
    await asyncio.sleep(0)
    assert sorted(tasks.names()) == ["prune", "reconcile"]
    await tasks.stop()
    assert sorted(cleaned) == ["prune", "reconcile"]
    assert tasks.names() == []


async def test_ensure_starts_a_task_only_while_none_of_that_name_runs():
    tasks = BackgroundTasks("switch-2")
    started = []
    release = asyncio.Event()

    async def ticker():
        started.append(1)
        await release.wait()

    tasks.ensure("ticker", ticker)
    tasks.ensure("ticker", ticker)
    await asyncio.sleep(0)
    assert started == [1]
    release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not tasks.running("ticker")
    tasks.ensure("ticker", ticker)  # it returned, so it can run again
    await asyncio.sleep(0)
    assert started == [1, 1]
    await tasks.stop()


async def test_nothing_starts_once_stopping_and_a_name_runs_once():
    tasks = BackgroundTasks("agent")
    tasks.start("watch", asyncio.sleep(10))
    with pytest.raises(RuntimeError, match="agent: a task named watch is already running"):
        tasks.start("watch", asyncio.sleep(10))
    await tasks.stop()
    with pytest.raises(RuntimeError, match="agent is stopping: late not started"):
        tasks.start("late", asyncio.sleep(10))
    tasks.ensure("late", lambda: asyncio.sleep(10))  # quietly not started
    assert tasks.names() == []
