"""What an upload is, from its bytes alone (never its name or the browser's type), and
the allow-list: PNG, JPEG, WebP and GIF images, PDF, and UTF-8 text (plain, Markdown,
CSV). Images are decoded and written again by Pillow: what is stored is the pixels, not
the file as sent, so EXIF and GPS data, comments and anything hidden after the image are
gone; the pixel count is checked from the header before anything is decoded, so a
decompression bomb is refused without being expanded; an animated GIF keeps its frames,
each re-encoded, the cap counting them all. SVG is refused (it is a document
that can carry scripts), as is anything else.

No database and no storage: `inspect` reads a file object and returns what to store.
"""

from __future__ import annotations

import codecs
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from chat.errors import ChatError
from chat.models import Attachment

Kind = Attachment.Kind

# Pillow format: (content type, extension, save options).
IMAGE_FORMATS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "PNG": ("image/png", "png", {}),
    "JPEG": ("image/jpeg", "jpg", {"quality": 90}),
    "WEBP": ("image/webp", "webp", {"quality": 90}),
    "GIF": ("image/gif", "gif", {}),
}
# Text by its name's extension; the bytes decide that it is text at all.
TEXT_TYPES = {"md": "text/markdown", "markdown": "text/markdown", "csv": "text/csv"}
PDF_MAGIC = b"%PDF-"
CHUNK = 64 * 1024
# Control characters a text file has no business holding (tab, newlines, form feed are fine).
_BINARY = bytes(c for c in range(32) if c not in (9, 10, 12, 13))
ALLOWED = "PNG, JPEG, WebP or GIF images, PDF, or text (plain, Markdown, CSV)"


@dataclass(frozen=True, slots=True)
class Inspected:
    """What to store: `reencoded` bytes for an image, else the upload as it was."""

    kind: str
    content_type: str
    extension: str
    width: int | None = None
    height: int | None = None
    reencoded: bytes | None = None


def unsupported(what: str) -> ChatError:
    return ChatError("unsupported_file_type", f"{what} Attach {ALLOWED}.")


def inspect(file: IO[bytes], *, name: str, max_pixels: int) -> Inspected:
    """Identify `file` by its bytes and check it; an image comes back re-encoded."""
    file.seek(0)
    head = file.read(CHUNK)
    if not head:
        raise ChatError("empty_file", "The file is empty.")
    if head.startswith(PDF_MAGIC):
        return Inspected(Kind.PDF, "application/pdf", "pdf")
    file.seek(0)
    image = _open_image(file)
    if image is not None:
        return _reencoded(image, max_pixels=max_pixels)
    if _looks_like_markup(head) or name.lower().endswith((".svg", ".svgz")):
        raise unsupported("SVG, HTML and XML files are not accepted (they can carry scripts).")
    if not _is_text(file):
        raise unsupported("This type of file is not accepted.")
    extension = name.rpartition(".")[2].lower() if "." in name else "txt"
    content_type = TEXT_TYPES.get(extension, "text/plain")
    if content_type == "text/plain":
        extension = "txt"
    return Inspected(Kind.TEXT, content_type, extension)


def _open_image(file: IO[bytes]) -> Image.Image | None:
    """The image if Pillow recognises one of the allowed formats (reading its header only)."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning at open: the pixel cap below is ours, and stricter.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(file, formats=list(IMAGE_FORMATS))
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError:
        raise ChatError("image_too_large", "The image has far too many pixels.") from None
    except (OSError, SyntaxError, ValueError):
        raise ChatError("invalid_file", "The image could not be read.") from None


def _reencoded(image: Image.Image, *, max_pixels: int) -> Inspected:
    width, height = image.size
    if width * height > max_pixels:
        raise ChatError(
            "image_too_large",
            f"The image is {width}×{height} pixels; at most {max_pixels:,} pixels are accepted.",
        )
    image_format = image.format or ""
    content_type, extension, options = IMAGE_FORMATS[image_format]
    if image_format == "GIF" and getattr(image, "is_animated", False):
        return _reencoded_animation(image, max_pixels=max_pixels)
    with _decoding(image, "image"):
        image.load()
        # Turned upright by its EXIF orientation, since the EXIF itself is dropped.
        upright = ImageOps.exif_transpose(image) if image_format == "JPEG" else image
        out = io.BytesIO()
        _pixels_only(upright, image_format).save(out, format=image_format, **options)
    return Inspected(
        Kind.IMAGE,
        content_type,
        extension,
        width=upright.width,
        height=upright.height,
        reencoded=out.getvalue(),
    )


def _reencoded_animation(image: Image.Image, *, max_pixels: int) -> Inspected:
    """An animated GIF, frame by frame: each frame's pixels (as Pillow composes them) and
    its duration, the loop count, and nothing else. The pixel cap counts every frame, and
    frames are counted as they are decoded, so a long animation is refused before all of
    it is."""
    width, height = image.size
    frames: list[Image.Image] = []
    durations: list[int] = []
    with _decoding(image, "animation"):
        for frame in ImageSequence.Iterator(image):
            if (len(frames) + 1) * width * height > max_pixels:
                raise ChatError(
                    "image_too_large",
                    f"The animation has more than {len(frames)} frames of {width}×{height}"
                    f" pixels; at most {max_pixels:,} pixels across its frames are accepted.",
                )
            frames.append(_pixels_only(frame.convert("RGBA"), "GIF"))
            durations.append(int(frame.info.get("duration") or 0))
        out = io.BytesIO()
        frames[0].save(
            out,
            format="GIF",
            save_all=True,
            append_images=frames[1:],
            duration=durations,
            loop=int(image.info.get("loop", 0)),
            disposal=2,  # each frame is whole: the one before is cleared, not kept
        )
    return Inspected(
        Kind.IMAGE, "image/gif", "gif", width=width, height=height, reencoded=out.getvalue()
    )


@contextmanager
def _decoding(image: Image.Image, what: str) -> Iterator[None]:
    """Decoding `image`: a damaged file is refused as such, and a bomb that lies in its
    header is caught while decoding (Pillow's warning, as an error); closed after."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        raise ChatError("invalid_file", f"The {what} is damaged or incomplete.") from None
    except Image.DecompressionBombWarning:
        raise ChatError("image_too_large", f"The {what} decodes to too many pixels.") from None
    finally:
        image.close()


def _pixels_only(image: Image.Image, image_format: str) -> Image.Image:
    """A copy of the pixels with no metadata (EXIF, GPS, XMP, comments, text chunks): a
    new image, so nothing the decoder read can be written back by an encoder that looks at
    `info`. Transparency is pixels, so it is kept."""
    if image_format == "JPEG" and image.mode not in ("L", "RGB", "CMYK"):
        image = image.convert("RGB")
    elif image_format == "WEBP" and image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA")
    clean = Image.new(image.mode, image.size)
    clean.paste(image)
    if image.mode == "P":
        palette = image.getpalette()
        if palette is not None:
            clean.putpalette(palette)
        if "transparency" in image.info:
            clean.info["transparency"] = image.info["transparency"]
    return clean


def _looks_like_markup(head: bytes) -> bool:
    """A document a browser would render: it starts as one. (Text that merely mentions a
    tag is text; it is served as text/plain, nosniff, as a download, so it renders nowhere.)"""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<?xml", b"<svg", b"<!doctype", b"<html", b"<!--"))


def _is_text(file: IO[bytes]) -> bool:
    """UTF-8 all through, without NUL or other control bytes (read in chunks)."""
    file.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while chunk := file.read(CHUNK):
            if len(chunk.translate(None, _BINARY)) != len(chunk):
                return False
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True
