"""What an encoded image's header says (PNG IHDR, JPEG SOF): format, size and whether it is grey, in pure
Python and without decoding a pixel, so the API checks uploads without running an image decoder on them;
and `scan_images`, those checks over an encoded shard's rows (docs/datasets.md).

Only what the worker's decoder (Pillow) turns into 8-bit pixels is accepted: PNG of at most 8 bits per
channel; JPEG baseline, extended sequential or progressive (Huffman), 8-bit, with 1, 3 or 4 components.
The bounds keep a crafted file from costing a worker more than a large photo would: MAX_IMAGE_BYTES of
encoded bytes, MAX_PIXELS of width × height (a "decompression bomb" is a small file that decodes to
gigabytes).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

MAX_IMAGE_BYTES = 32 << 20
MAX_PIXELS = 40_000_000
MAX_JPEG_SEGMENTS = 256  # segments before the frame header: real files have a handful (APPn, DQT, DHT)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
_PNG_DEPTHS = {0: (1, 2, 4, 8), 2: (8,), 3: (1, 2, 4, 8), 4: (8,), 6: (8,)}  # colour type -> bit depths taken
_PNG_GREY = (0, 4)  # grey, grey + alpha
_JPEG_SOF = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive (Huffman)
_JPEG_OTHER_SOF = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # lossless, hierarchical, arithmetic
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length: TEM, RST0-7
OFFSETS_CHUNK = 1 << 16  # rows of an encoded shard whose offsets are read at a time

Read = Callable[[int, int], bytes]  # (offset in the image, count) -> at most count bytes


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "PNG" or "JPEG"
    width: int
    height: int
    grey: bool


def image_header(read: Read, length: int) -> ImageHeader:
    """The header of the `length` bytes `read` gives; ValueError saying why they are not an accepted image."""
    if length > MAX_IMAGE_BYTES:
        raise ValueError(f"{length} bytes: an image may hold at most {MAX_IMAGE_BYTES >> 20} MiB")
    head = read(0, 29)
    if head.startswith(PNG_SIGNATURE):
        header = _png(head)
    elif head.startswith(JPEG_SIGNATURE):
        header = _jpeg(read, length)
    else:
        raise ValueError("not a PNG or JPEG image (no PNG or JPEG signature)")
    if header.width == 0 or header.height == 0:
        raise ValueError(f"a {header.format} of {header.width}x{header.height} pixels is empty")
    if header.width * header.height > MAX_PIXELS:
        raise ValueError(
            f"a {header.format} of {header.width}x{header.height} pixels is over the "
            f"{MAX_PIXELS:,} pixel bound (a decompression bomb, or resize it first)"
        )
    return header


def _png(head: bytes) -> ImageHeader:
    if len(head) < 26 or head[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise ValueError("a PNG whose first chunk is not a 13-byte IHDR")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    depth, colour = head[24], head[25]
    if colour not in _PNG_DEPTHS or depth not in _PNG_DEPTHS[colour]:
        raise ValueError(
            f"a PNG of colour type {colour} and bit depth {depth}: store 8-bit PNGs (pixels are "
            "uint8; a 16-bit PNG would be clipped, not scaled, when decoded)"
        )
    return ImageHeader("PNG", width, height, colour in _PNG_GREY)


def _jpeg(read: Read, length: int) -> ImageHeader:
    """Walk the segments from SOI to the frame header (SOF), reading 4 bytes a segment."""
    position = 2
    for _ in range(MAX_JPEG_SEGMENTS):
        head = read(position, 4)
        if len(head) < 2 or head[0] != 0xFF:
            raise ValueError(f"a JPEG without a marker at byte {position} (truncated or not a JPEG)")
        marker = head[1]
        if marker == 0xFF:  # a fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        if marker in (0xD9, 0xDA) or len(head) < 4:
            raise ValueError("a JPEG without a frame header (SOF) before its image data")
        if marker in _JPEG_OTHER_SOF:
            raise ValueError(
                f"a JPEG coded with SOF{marker - 0xC0} (lossless, hierarchical or arithmetic): "
                "store baseline or progressive JPEG, or PNG"
            )
        if marker in _JPEG_SOF:
            frame = read(position + 4, 6)
            if len(frame) < 6:
                raise ValueError("a JPEG whose frame header is cut short")
            precision, components = frame[0], frame[5]
            height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
            if precision != 8 or components not in (1, 3, 4):
                raise ValueError(
                    f"a JPEG of {precision}-bit precision and {components} components: store "
                    "8-bit JPEG with 1, 3 or 4 components"
                )
            return ImageHeader("JPEG", width, height, components == 1)
        position += 2 + int.from_bytes(head[2:4], "big")
        if position >= length:
            break
    raise ValueError(f"a JPEG without a frame header (SOF) in its first {MAX_JPEG_SEGMENTS} segments")


def scan_images(
    file: BinaryIO, offsets_at: int, images_at: int, rows: int, total: int, limit: int
) -> tuple[bool, list[str]]:
    """An encoded shard's rows (file positions of its `offsets` [rows + 1] and `images` [total] data): whether
    every image is grey, and up to `limit` problems as "row k: why". Offsets are read OFFSETS_CHUNK at a time
    and of each image only its header, so memory stays small however large the shard."""
    grey, problems = True, list[str]()

    def reader(start: int, end: int) -> Read:
        def read(at: int, count: int) -> bytes:
            file.seek(images_at + start + at)
            return file.read(max(0, min(count, end - start - at)))

        return read

    offsets = [0]
    for first in range(0, max(rows, 1), OFFSETS_CHUNK):
        count = min(OFFSETS_CHUNK, rows - first) + 1
        file.seek(offsets_at + 8 * first)
        offsets = list(struct.unpack(f"<{count}q", file.read(8 * count)))
        if first == 0 and offsets[0] != 0:
            return grey, [f"offsets[0] must be 0, got {offsets[0]}"]
        for row, (start, end) in enumerate(itertools.pairwise(offsets), start=first):
            if len(problems) == limit:
                return grey, problems
            if not 0 <= start <= end <= total:
                problems.append(
                    f"row {row}: offsets {start}..{end} must be non-decreasing and within the {total} bytes of 'images'"
                )
                continue
            try:
                grey = image_header(reader(start, end), end - start).grey and grey
            except ValueError as error:
                problems.append(f"row {row}: {error}")
    if offsets[-1] != total and not problems:
        problems.append(f"offsets[{rows}] must be the {total} bytes of 'images', got {offsets[-1]}")
    return grey, problems
