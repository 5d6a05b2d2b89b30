"""A TCP relay that delays each direction by a fixed time and counts accepted connections.

The kernel on the bench machines has no netem, so latency is added by putting this in front of
an sshd: ``--delay D`` adds ``2*D`` to the round-trip time of that hop. Stdlib only: it runs
under ``ip netns exec NS python3 relay.py``. Prints ``READY <port>`` once listening and one
``ACCEPT <n>`` line per connection; SIGTERM/SIGINT close the listener and every relayed pair.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

CHUNK = 65536


def _split(address: str) -> tuple[str, int]:
    """``host:port`` → (host, port)."""
    host, _, port = address.rpartition(":")
    return host, int(port)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy one direction, each chunk sent ``delay`` seconds after it arrived (order kept)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            data = await reader.read(CHUNK)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    finally:
        sender.cancel()


class Relay:
    """Accepts on one address and relays every connection to ``target`` with a delay."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.accepted = 0
        self.pairs: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one accepted connection until both directions ended."""
        self.accepted += 1
        print(f"ACCEPT {self.accepted}", flush=True)
        task = asyncio.current_task()
        assert task is not None
        self.pairs.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(*self.target)
            await asyncio.gather(
                _pump(reader, upstream, self.delay), _pump(up_reader, writer, self.delay)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.pairs.discard(task)
            for w in (writer, upstream):
                if w is not None:
                    w.close()
                    with contextlib.suppress(OSError):
                        await w.wait_closed()


async def serve(listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
    """Listen, print READY, and relay until SIGTERM/SIGINT."""
    relay = Relay(target, delay)
    server = await asyncio.start_server(relay.handle, *listen, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for task in list(relay.pairs):
        task.cancel()
    await asyncio.gather(*relay.pairs, return_exceptions=True)
    await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    """Parse ``--listen HOST:PORT --to HOST:PORT --delay SECONDS`` and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept on")
    parser.add_argument("--to", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added each way")
    args = parser.parse_args(argv)
    asyncio.run(serve(_split(args.listen), _split(args.to), args.delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
