"""A served frame's features, computed by the ingestion component's own per-image functions, so
that live features equal training features: brightness, grayscale, width and height
(images.decode_image_file), the image buckets (features.image_buckets) and day or night
(records.LightingRule: from the capture time a client sent, else from brightness, as ingestion
decides for a photo without a metadata row). An image is size-checked from its header before it
is decoded."""
import io
from typing import Any, Dict, Optional, Tuple

from PIL import Image

from petpark.components.image_example_gen import images, records
from petpark.components.image_example_gen.rejections import FileRejected
from petpark.modules import features
from petpark.monitoring.logs import Frame
from petpark.serving.limits import Limits

MAX_IMAGE_BYTES = Limits.max_request_bytes  # petpark serve's own bounds
MAX_IMAGE_PIXELS = Limits.max_image_pixels
LIGHTING = records.LightingRule(features.NIGHT_HOURS, features.NIGHT_BRIGHTNESS)
# the features a window's statistics hold, as ImageExampleGen writes them
COLUMNS = (features.WIDTH_KEY, features.HEIGHT_KEY, features.BRIGHTNESS_KEY, features.GRAYSCALE_KEY,
           features.LIGHTING_KEY, features.CAMERA_KEY, features.BRIGHTNESS_BUCKET_KEY,
           features.RESOLUTION_BUCKET_KEY, features.ASPECT_BUCKET_KEY)


def size_problem(data: Optional[bytes]) -> Optional[str]:
    """Why an image must not be decoded ('no_image', 'too_large', 'too_many_pixels'), else None."""
    if not data:
        return 'no_image'
    if len(data) > MAX_IMAGE_BYTES:
        return 'too_large'
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        return 'too_many_pixels'
    except (OSError, ValueError, SyntaxError):
        return None  # not an image Pillow knows: decode_image_file says why
    return 'too_many_pixels' if width * height > MAX_IMAGE_PIXELS else None


def frame_features(frame: Frame) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """({feature: value}, None) for a usable frame, (None, reason) for one that is not."""
    problem = size_problem(frame.image)
    if problem:
        return None, problem
    try:
        _, derived, _ = images.decode_image_file(frame.image)
    except FileRejected as e:
        return None, e.reason
    derived.pop(images.RGB_IMAGE)
    found = {key: derived[key] for key in (features.WIDTH_KEY, features.HEIGHT_KEY, features.BRIGHTNESS_KEY,
                                           features.GRAYSCALE_KEY)}
    found.update(features.image_buckets(found[features.WIDTH_KEY], found[features.HEIGHT_KEY],
                                        found[features.BRIGHTNESS_KEY]))
    found[features.LIGHTING_KEY] = LIGHTING.of(frame.captured_at, found[features.BRIGHTNESS_KEY])
    found[features.CAMERA_KEY] = frame.camera or None
    return found, None
