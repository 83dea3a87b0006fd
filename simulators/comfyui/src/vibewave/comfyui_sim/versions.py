"""The ComfyUI releases the simulator can claim to be (`--comfyui-version`) and how they differ.

Every field is a difference a client can see, taken from the two recorded transcript sets
(reference/comfyui/transcripts/*.json = 0.33.0, transcripts/v0.3.64/*.json = 0.3.64) or from a real 0.3.64
run on this kind of machine (simulator README, "Checked against a real ComfyUI 0.3.64"). Handlers ask the
dialect instead of testing version strings.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_VERSION = "0.33.0"


@dataclass(frozen=True)
class Dialect:
    version: str
    # data/<file>: object_info entries of the supported classes, copied from that release's GET /object_info.
    catalogue_file: str
    # GET /models, in the server's order.
    model_folders: tuple[str, ...]
    frontend_version: str
    templates_version: str
    # system_stats.system.comfy_package_versions (and deploy_environment): absent before 0.33.
    package_versions: tuple[tuple[str, str], ...] | None
    # system_stats.system.os: 0.33 reports sys.platform ("linux"), 0.3.64 os.name ("posix").
    os_from_platform: bool
    # GET /features and the WebSocket feature_flags reply: 0.3.64 knows only two flags.
    full_features: bool
    # POST /prompt prompt_id: 0.33 wants a canonical lowercase UUID (400 invalid_prompt_id), 0.3.64 takes
    # str() of anything (null becomes "None").
    strict_prompt_id: bool
    # Unknown class_type / node without class_type: 0.33 `missing_node_type` with extra_info,
    # 0.3.64 `invalid_prompt` with empty extra_info and other wording.
    missing_node_type: bool
    # extra_data.create_time (ms epoch) in /queue, /history and the jobs API.
    create_time: bool
    # The Comfy-Usage-Source request header is copied into extra_data.comfy_usage_source.
    usage_source_header: bool
    # /api/jobs... routes (0.3.64: GET 404 from the static route, POST 405).
    jobs_api: bool
    # /view answers carry X-Content-Type-Options: nosniff.
    nosniff: bool
    # 0.3.64's default cache keeps only results the next prompt uses again ("classic"); 0.33 keeps them
    # until memory runs low (RAM-pressure cache, an LRU here).
    classic_cache: bool
    # 0.3.64 strips auth_token_comfy_org / api_key_comfy_org only when writing history; /queue shows them.
    queue_hides_sensitive: bool
    # 0.3.64's delete_queue_item empties the heap through wipe_queue() when it removes the last pending item
    # and then reports the change again: two status frames.
    double_status_on_last_delete: bool


MODEL_FOLDERS_033 = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "custom_nodes",
    "datasets",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
    "background_removal",
    "frame_interpolation",
    "geometry_estimation",
    "optical_flow",
    "detection",
)

MODEL_FOLDERS_0364 = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
)

DIALECTS: dict[str, Dialect] = {
    "0.33.0": Dialect(
        version="0.33.0",
        catalogue_file="object_info.json.gz",
        model_folders=MODEL_FOLDERS_033,
        frontend_version="1.49.6",
        templates_version="0.11.44",
        package_versions=(
            ("comfyui-frontend-package", "1.49.6"),
            ("comfyui-workflow-templates", "0.11.44"),
            ("comfyui-embedded-docs", "0.5.10"),
            ("comfy-kitchen", "0.2.31"),
            ("comfy-aimdo", "0.4.13"),
        ),
        os_from_platform=True,
        full_features=True,
        strict_prompt_id=True,
        missing_node_type=True,
        create_time=True,
        usage_source_header=True,
        jobs_api=True,
        nosniff=True,
        classic_cache=False,
        queue_hides_sensitive=True,
        double_status_on_last_delete=False,
    ),
    "0.3.64": Dialect(
        version="0.3.64",
        catalogue_file="object_info_0.3.64.json.gz",
        model_folders=MODEL_FOLDERS_0364,
        frontend_version="1.27.10",
        templates_version="0.1.95",
        package_versions=None,
        os_from_platform=False,
        full_features=False,
        strict_prompt_id=False,
        missing_node_type=False,
        create_time=False,
        usage_source_header=False,
        jobs_api=False,
        nosniff=False,
        classic_cache=True,
        queue_hides_sensitive=False,
        double_status_on_last_delete=True,
    ),
}

VERSIONS = tuple(DIALECTS)


def dialect(version: str) -> Dialect:
    try:
        return DIALECTS[version]
    except KeyError:
        raise ValueError(f"unsupported ComfyUI version {version!r}; choose one of {', '.join(VERSIONS)}") from None
