"""The simulated data that flows along graph links instead of tensors and models.

Each value is small and hashable; its `str()` is what ComfyUI would show for a non-primitive input in
`execution_error.current_inputs` (there: a tensor or object repr; here: an explicit simulator label).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vibewave.comfyui_sim.render import Frame


@dataclass(frozen=True)
class Model:
    name: str
    patches: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"<simulated MODEL {self.name} {list(self.patches)}>"


@dataclass(frozen=True)
class Clip:
    name: str
    type: str

    def __str__(self) -> str:
        return f"<simulated CLIP {self.name} ({self.type})>"


@dataclass(frozen=True)
class Vae:
    name: str

    def __str__(self) -> str:
        return f"<simulated VAE {self.name}>"


@dataclass(frozen=True)
class Conditioning:
    text: str

    def __str__(self) -> str:
        return f"<simulated CONDITIONING {self.text[:40]!r}>"


@dataclass(frozen=True)
class Latent:
    """Pixel size it decodes to, batch and video length; `key` is None until a sampler has run; `start`:
    the encoded start image of an image-to-video latent (its first frame)."""

    width: int
    height: int
    batch: int
    length: int = 1
    key: bytes | None = None
    start: bytes | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"<simulated LATENT {self.batch}x{self.length}x{self.height}x{self.width}>"


@dataclass(frozen=True)
class Images:
    """`source`: the file a LoadImage read (encoded), for nodes that use the picture itself."""

    width: int
    height: int
    frames: tuple[Frame, ...]
    source: bytes | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"<simulated IMAGE {len(self.frames)}x{self.height}x{self.width}x3>"

    def map(self, label: str) -> Images:
        return Images(self.width, self.height, tuple(f.derive(label) for f in self.frames))


@dataclass(frozen=True)
class Mask:
    width: int
    height: int
    count: int

    def __str__(self) -> str:
        return f"<simulated MASK {self.count}x{self.height}x{self.width}>"


@dataclass(frozen=True)
class Video:
    images: Images
    fps: float

    def __str__(self) -> str:
        return f"<simulated VIDEO {len(self.images.frames)} frames @ {self.fps} fps>"


def format_value(value: object) -> object:
    """ComfyUI's format_value for current_inputs: primitives as-is, everything else as str()."""
    if value is None or isinstance(value, int | float | bool | str):
        return value
    return str(value)
