"""Checking and decoding the capture's images, with limits applied before any pixel is decoded.

:func:`inspect_image` reads only the header (size, pixel format) and checks it against the
contract; :func:`decode_view` and :func:`decode_depth` then decode. PNG bit depth and
colour type are read from the IHDR chunk directly because Pillow silently maps 16-bit RGB
to 8-bit "RGB".
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from .archive import Limits
from .errors import (EmptyMask, ImageNotSquare, ImageSizeOutOfRange, ImageTooLarge, UnreadableImage,
                     UnsupportedImageMode)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}


@dataclass(frozen=True)
class ImageHeader:
    """What an image declares about itself.

    Attributes:
        file: the member name, for messages.
        format: ``"PNG"`` or ``"JPEG"``.
        width, height: pixels.
        channels: 1 (grey), 3 (RGB) or 4 (RGBA).
        bits: bits per channel (8 or 16).
    """

    file: str
    format: str
    width: int
    height: int
    channels: int
    bits: int


def _png_ihdr(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from a PNG's IHDR, or None if it is not a PNG."""
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, bits, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, bits, colour


def _open(file: str, data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"{file} declares too many pixels to be opened safely ({exc})", file=file,
                                reason=str(exc)) from None
        except UnidentifiedImageError:  # its message names the BytesIO object, not the file
            raise UnreadableImage(file=file, reason="not a PNG or JPEG file: no image format recognised") from None
        except Exception as exc:  # Pillow raises many types for garbage input
            raise UnreadableImage(file=file, reason=f"{type(exc).__name__}: {exc}") from None


def inspect_image(file: str, data: bytes, kind: str, limits: Limits = Limits()) -> ImageHeader:
    """Check an image's header against the contract without decoding its pixels.

    Parameters:
        file: member name (used in messages).
        data: the file's bytes.
        kind: ``"view"`` (8-bit RGB/RGBA PNG or JPEG) or ``"depth"`` (8/16-bit grey PNG).
    """
    ihdr = _png_ihdr(data)
    if ihdr is not None:
        width, height, bits, colour = ihdr
        fmt = "PNG"
    else:
        im = _open(file, data)
        fmt = im.format or "?"
        width, height = im.size
        if fmt != "JPEG":
            raise UnreadableImage(file=file, reason=f"format {fmt} is not PNG or JPEG")
        bits, colour = 8, {"L": 0, "RGB": 2}.get(im.mode, -1)
        if colour < 0:
            raise UnsupportedImageMode(file=file, mode=f"JPEG {im.mode}",
                                       expected="views must be 8-bit RGB (JPEG) or RGB/RGBA (PNG)")
    side = limits.max_image_side
    if width > side or height > side:
        raise ImageTooLarge(file=file, width=width, height=height, limit=side)
    if width != height:
        raise ImageNotSquare(file=file, width=width, height=height)
    if width < limits.min_image_side:
        raise ImageSizeOutOfRange(file=file, width=width, height=height, low=limits.min_image_side, high=side)
    colour_name = _PNG_COLOUR.get(colour, f"colour type {colour}")
    if kind == "view":
        if fmt == "JPEG" and colour != 2 or fmt == "PNG" and (colour not in (2, 6) or bits != 8):
            raise UnsupportedImageMode(file=file, mode=f"{bits}-bit {colour_name} {fmt}",
                                       expected="views must be 8-bit RGB or RGBA (PNG) or 8-bit RGB (JPEG)")
        channels = 4 if colour == 6 else 3
    elif kind == "depth":
        if fmt != "PNG" or colour != 0 or bits not in (8, 16):
            raise UnsupportedImageMode(file=file, mode=f"{bits}-bit {colour_name} {fmt}",
                                       expected="depth renders must be single-channel 8- or 16-bit grayscale PNG")
        channels = 1
    else:
        raise ValueError(f"unknown image kind {kind!r}")
    return ImageHeader(file, fmt, width, height, channels, bits)


def _decode(header: ImageHeader, data: bytes) -> np.ndarray:
    im = _open(header.file, data)
    try:
        im.load()
    except Exception as exc:
        raise UnreadableImage(file=header.file, reason=f"{type(exc).__name__}: {exc}") from None
    if im.size != (header.width, header.height):
        raise UnreadableImage(file=header.file, reason="its header and its data disagree about the size")
    return np.asarray(im)


def decode_view(header: ImageHeader, data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (RGB (H, W, 3) uint8, alpha mask (H, W) bool or None when the image has no alpha)."""
    arr = _decode(header, data)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise UnsupportedImageMode(file=header.file, mode=f"{arr.dtype} {arr.shape}",
                                   expected="views must be 8-bit RGB or RGBA")
    if arr.shape[2] == 4:
        alpha = arr[..., 3] > 127
        if not alpha.any():
            raise EmptyMask(file=header.file)
        return np.ascontiguousarray(arr[..., :3]), alpha
    return arr, None


def decode_depth(header: ImageHeader, data: bytes) -> np.ndarray:
    """-> (H, W) raw depth values: uint8 for 8-bit PNGs, uint16 for 16-bit ones."""
    arr = _decode(header, data)
    if arr.ndim != 2:
        raise UnsupportedImageMode(file=header.file, mode=f"{arr.shape}", expected="depth renders must be single-channel")
    if header.bits == 16:
        return arr.astype(np.uint16)
    return arr.astype(np.uint8)
