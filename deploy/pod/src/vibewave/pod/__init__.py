"""The pod bootstrap: what a RunPod pod runs to become a ComfyUI server behind a token.

The modules named in `payload.BOOTSTRAP_MODULES` travel to the pod inside an environment variable and run
on the image's own Python (3.10 on `runpod/pytorch:2.1.0`): standard library only, except `token_proxy`,
which runs with ComfyUI's interpreter and its aiohttp. `payload` is the host side: it builds that archive,
the start command and the environment pod-manager gives a pod.
"""
