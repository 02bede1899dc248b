"""The nginx adapter: write a config, check it with `nginx -t`, swap it in, reload
gracefully, and ask the running nginx which generation it serves.

nginx runs as a daemon of its own, so traffic keeps flowing while the router
agent restarts; the agent adopts it through its pid file.
"""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp


class NginxError(Exception):
    pass


class Nginx:
    def __init__(self, workdir: str, binary: str = "nginx"):
        self.workdir = Path(workdir)
        self.binary = binary
        self.conf = self.workdir / "nginx.conf"
        for sub in ("logs", "tmp"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)

    def pid(self) -> int | None:
        try:
            pid = int((self.workdir / "nginx.pid").read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    async def _run(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            self.binary, "-p", str(self.workdir), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise NginxError(f"nginx {' '.join(args)}: {out.decode(errors='replace').strip()}")

    async def apply(self, text: str) -> None:
        """Check the new config, then swap it in and reload (or start nginx)."""
        candidate = self.workdir / "nginx.conf.new"
        candidate.write_text(text)
        await self._run("-t", "-q", "-c", str(candidate))
        os.replace(candidate, self.conf)
        pid = self.pid()
        if pid is None:
            await self._run("-c", str(self.conf))
        else:
            os.kill(pid, signal.SIGHUP)

    async def serving_generation(self) -> str | None:
        """The generation the workers answer with; after a reload old workers may
        still answer for a moment, so callers poll until it matches."""
        try:
            connector = aiohttp.UnixConnector(path=str(self.workdir / "control.sock"))
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get("http://router/generation",
                                       timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    return (await resp.text()).strip()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGQUIT)
