"""The HTTP floor: the least any search served over HTTP pays on this machine beside its encoders.

A bare ASGI app under uvicorn, run with the settings `fusionrank serve` uses (uvloop, httptools,
no access log), that reads the whole request body and answers 200 with a fixed JSON body: the
bytes of a real search response, so that both move the same bytes. No framework, no
validation, no work. The latency benchmark measures it with the same client, between the same
blocks of searches, so that "p50 - encoder - HTTP floor" is what the service itself costs.
Usage: python -m benchmarks.http_floor BODY_FILE PORT
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def make_app(body: bytes) -> Callable[[Message, Receive, Send], Awaitable[None]]:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        more = True
        while more:  # read the request as a real endpoint must
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    import uvicorn

    body = Path(sys.argv[1]).read_bytes()
    uvicorn.run(
        make_app(body),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=600,  # the benchmark's blocks alternate: its connection idles a while
    )


if __name__ == "__main__":
    main()
