"""Control-plane components as child processes of ``microkube server``: the controller manager, the
scheduler and simulated nodes each run in their own process (their own core and memory, as
kube-controller-manager and kube-scheduler do), are restarted with backoff when they exit, and are
stopped with the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
MAX_BACKOFF = 30.0


class Supervisor:
    def __init__(self, commands: dict[str, list[str]]) -> None:
        self.commands = commands
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.restarts: dict[str, int] = dict.fromkeys(commands, 0)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(name, command), name=f"supervise-{name}")
                       for name, command in self.commands.items()]

    async def _keep(self, name: str, command: list[str]) -> None:
        backoff = 1.0
        while True:
            # the children log to our stderr; their stdout banner too (stdout is for the ready line)
            process = await asyncio.create_subprocess_exec(*command, stdout=sys.stderr.fileno())
            self.processes[name] = process
            started = asyncio.get_running_loop().time()
            code = await process.wait()
            if asyncio.get_running_loop().time() - started > 60:
                backoff = 1.0
            self.restarts[name] += 1
            log.warning("%s exited with status %s; restarting in %.0f s", name, code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for process in self.processes.values():
            if process.returncode is None:
                process.terminate()
        for name, process in self.processes.items():
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("%s did not stop in %.0f s; killing it", name, STOP_TIMEOUT)
                process.kill()
                await process.wait()
