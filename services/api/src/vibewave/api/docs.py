"""`/docs` (Swagger UI) and `/redoc`, both reading the schema Litestar serves at `/schema/openapi.json`.

Their scripts and styles come from this server, never a CDN, so both render with no internet:
`/docs/assets/` serves the static folder of the `drf-spectacular-sidecar` wheel (swagger-ui-dist and
redoc, republished from npm every month). Its Django app is never imported: `find_spec` locates the
folder without running the package. The pages stay hand-written rather than Litestar's render plugins,
which mount under `/schema` and inline the schema instead of reading it from `/schema/openapi.json`.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from litestar import MediaType, Router, get
from litestar.static_files import create_static_files_router

SCHEMA_URL = "/schema/openapi.json"
ASSETS_URL = "/docs/assets"
FAVICON = f'<link rel="icon" type="image/png" href="{ASSETS_URL}/swagger-ui-dist/favicon-32x32.png">'

SWAGGER_HTML = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Vibewave API</title>{FAVICON}
<link rel="stylesheet" href="{ASSETS_URL}/swagger-ui-dist/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{ASSETS_URL}/swagger-ui-dist/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({{url: "{SCHEMA_URL}", dom_id: "#swagger-ui"}});</script>
</body></html>"""

REDOC_HTML = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Vibewave API</title>{FAVICON}</head>
<body><redoc spec-url="{SCHEMA_URL}"></redoc>
<script src="{ASSETS_URL}/redoc/bundles/redoc.standalone.js"></script>
</body></html>"""


def assets_dir() -> Path:
    """The sidecar's static folder, found without importing the package (its `__init__` imports Django)."""
    spec = find_spec("drf_spectacular_sidecar")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("drf-spectacular-sidecar, which holds the docs' scripts, is not installed")
    return Path(spec.submodule_search_locations[0], "static", "drf_spectacular_sidecar")


def docs_assets() -> Router:
    """`/docs/assets/…`: what the two pages load (kept out of the schema, as the pages are)."""
    return create_static_files_router(ASSETS_URL, directories=[assets_dir()], name="docs-assets")


@get("/docs", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
def swagger_ui() -> str:
    return SWAGGER_HTML


@get("/redoc", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
def redoc() -> str:
    return REDOC_HTML
