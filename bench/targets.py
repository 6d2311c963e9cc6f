"""One webhook endpoint as a real uvicorn process: `python -m bench.targets KIND --port P`.

- bare: a Starlette endpoint that reads the body and answers 204 (the stack's ceiling);
- reference: the handler a user writes from the docs (unwrap, then retrieve the session inline);
- idlehook: `wiring.service(settings, run_worker=False)`, exactly as `idlehook serve --no-worker`.
"""

import argparse
import gc
from typing import Any

import uvicorn
from anthropic import AsyncAnthropic
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.common import SECRET, WEBHOOK_PATH


def bare() -> Any:
    async def endpoint(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    return Starlette(routes=[Route(WEBHOOK_PATH, endpoint, methods=["POST"])])


def reference(emulator_url: str) -> Any:
    client = AsyncAnthropic(
        api_key="bench", base_url=emulator_url, webhook_key=SECRET, max_retries=2
    )

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        try:
            event = client.beta.webhooks.unwrap(body.decode(), headers=dict(request.headers))
        except Exception:
            return Response(status_code=400)
        await client.beta.sessions.retrieve(event.data.id)
        return Response(status_code=204)

    return Starlette(routes=[Route(WEBHOOK_PATH, endpoint, methods=["POST"])])


def idlehook(database_url: str, emulator_url: str | None) -> Any:
    from idlehook import wiring
    from idlehook.logs import configure_logging
    from idlehook.settings import Settings

    configure_logging(json=True)
    settings = Settings(
        database_url=database_url,
        webhook_signing_keys=[SECRET],
        api_key="bench",
        base_url=emulator_url,
    )
    app = wiring.service(settings, run_worker=False).app
    gc.freeze()  # as `idlehook serve` does
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["bare", "reference", "idlehook"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", default="sqlite:///bench.db")
    parser.add_argument("--emulator", default=None)
    args = parser.parse_args()
    if args.kind == "bare":
        app = bare()
    elif args.kind == "reference":
        app = reference(args.emulator)
    else:
        app = idlehook(args.db, args.emulator)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    main()
