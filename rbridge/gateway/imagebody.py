"""Image request bodies: one image (Content-Type image/png or image/jpeg) or several
(multipart/form-data, each part image/png or image/jpeg), for a model whose `<name>.json` has an
"image" block.

The gateway only takes the files out of the body and counts and measures them (max_images,
max_bytes of the block: a 413 before any work); decoding and preprocessing are the worker's
(rbridge/worker/images.py: the gateway never imports Pillow), which also answers 422 for a file
that is not a PNG or JPEG. The multipart body is read by werkzeug's parser (the one Flask uses),
from the bytes already read under --max-body; parts are kept in memory and their number is
capped, so a body of a million empty parts costs no more than the check.

Runs in the gateway process, on the HTTP server's threads.
"""

from __future__ import annotations

import io

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser

from rbridge.errors import BadRequest, TooLarge, UnsupportedMediaType

IMAGE_TYPES = ("image/png", "image/jpeg")
MULTIPART = "multipart/form-data"
ACCEPTED = (*IMAGE_TYPES, MULTIPART)


def is_image_request(mimetype: str) -> bool:
    return mimetype in ACCEPTED


def parse(data: bytes, mimetype: str, options: dict, config: dict) -> list[bytes]:
    """The uploaded files, in request order, each at most config["max_bytes"] bytes."""
    if not data:
        raise BadRequest(f"the request has no body; send a PNG or JPEG image ({mimetype})")
    if mimetype in IMAGE_TYPES:
        images = [data]
    else:
        images = _parts(data, options.get("boundary"), config["max_images"])
    if len(images) > config["max_images"]:
        raise TooLarge(f"{len(images)} images is more than this model takes in one request "
                       f"({config['max_images']}, image.max_images)", code="too_many_images")
    for i, image in enumerate(images, start=1):
        if len(image) > config["max_bytes"]:
            raise TooLarge(f"image {i} is {len(image)} bytes; this model takes images of at most "
                           f"{config['max_bytes']} bytes (image.max_bytes)", code="image_too_large")
    return images


def _parts(data: bytes, boundary: str | None, max_images: int) -> list[bytes]:
    if not boundary:
        raise BadRequest("a multipart/form-data body needs its boundary in the Content-Type header "
                         "(multipart/form-data; boundary=...)")
    # one part more than allowed is enough to tell the caller there are too many
    # cls=list: the parts as (field, value) in body order (a MultiDict would group them by field)
    parser = MultiPartParser(stream_factory=_in_memory, max_form_parts=max_images + 1,
                             max_form_memory_size=len(data), cls=list)
    try:
        fields, files = parser.parse(io.BytesIO(data), boundary.encode("latin-1"), len(data))
    except RequestEntityTooLarge:
        raise TooLarge(f"more images than this model takes in one request ({max_images}, "
                       "image.max_images)", code="too_many_images") from None
    except (ValueError, UnicodeError) as exc:
        raise BadRequest(f"the multipart body cannot be read: {exc}") from None
    if fields:
        raise BadRequest(f"every part of the multipart body must be a file (image/png or image/jpeg); "
                         f"part {fields[0][0]!r} is a plain field")
    images = []
    for i, (field, upload) in enumerate(files, start=1):
        if upload.mimetype not in IMAGE_TYPES:
            raise UnsupportedMediaType(
                f"part {i} ({field!r}) is {upload.mimetype or 'without a Content-Type'}; every part "
                "must be image/png or image/jpeg")
        images.append(upload.stream.getvalue())
    if not images:
        raise BadRequest("the multipart body holds no image; send one part per image "
                         "(image/png or image/jpeg)")
    return images


def _in_memory(total_content_length=None, content_type=None, filename=None, content_length=None):
    """werkzeug's stream factory: the body is already in memory, under --max-body."""
    return io.BytesIO()
