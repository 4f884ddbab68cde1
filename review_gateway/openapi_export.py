"""Writes the gateway's OpenAPI document as JSON without starting a server
(python -m review_gateway.openapi_export [PATH]; stdout without PATH).

`make api-types` feeds it to openapi-typescript, which writes the front end's
`src/api-schema.ts`; `make api-check` fails when that committed file is stale.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from review_gateway.app import create_app
from review_gateway.settings import GatewaySettings


def document() -> dict[str, Any]:
    """The OpenAPI document of a gateway built with throwaway settings (no server, no I/O
    beyond a temporary folder): the routes and shapes do not depend on the settings."""
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(GatewaySettings(data_dir=Path(data_dir), token_secret="x" * 32))
        return app.openapi()


def main(argv: list[str]) -> int:
    text = json.dumps(document(), indent=2, ensure_ascii=False) + "\n"
    if len(argv) > 1:
        Path(argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
