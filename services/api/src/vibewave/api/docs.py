"""`/docs` (Swagger UI) and `/redoc`, both reading the schema Litestar serves at `/schema/openapi.json`."""

from __future__ import annotations

from litestar import MediaType, get

SCHEMA_URL = "/schema/openapi.json"

SWAGGER_HTML = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Vibewave API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({{url: "{SCHEMA_URL}", dom_id: "#swagger-ui"}});</script>
</body></html>"""

REDOC_HTML = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Vibewave API</title></head>
<body><redoc spec-url="{SCHEMA_URL}"></redoc>
<script src="https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js"></script>
</body></html>"""


@get("/docs", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
def swagger_ui() -> str:
    return SWAGGER_HTML


@get("/redoc", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
def redoc() -> str:
    return REDOC_HTML
