"""Names and constants shared by every stage: one place names each feature."""

# Raw features written by the ImageExampleGen.
IMAGE_KEY = 'image_raw'
LABEL_KEY = 'label'
IMAGE_ID_KEY = 'image_id'
WIDTH_KEY = 'width'
HEIGHT_KEY = 'height'
BRIGHTNESS_KEY = 'brightness'
GRAYSCALE_KEY = 'is_grayscale'
CAMERA_KEY = 'camera_id'
CAPTURED_AT_KEY = 'captured_at'
LIGHTING_KEY = 'lighting'
# Image-derived slices (real photos carry no camera metadata): see image_buckets().
BRIGHTNESS_BUCKET_KEY = 'brightness_bucket'
RESOLUTION_BUCKET_KEY = 'resolution_bucket'
ASPECT_BUCKET_KEY = 'aspect_bucket'
# Image id of the first photo of its exact/near-duplicate group (its own id when unique); train/eval are split by it.
DUPLICATE_GROUP_KEY = 'duplicate_group'

# Class names in output order: index 1 is the positive class for binary metrics.
LABELS = ('cat', 'dog')
POSITIVE_CLASS_ID = 1

# Lighting values derived from capture time or, failing that, brightness.
LIGHTING_VALUES = ('day', 'night')
NIGHT_BRIGHTNESS = 0.25  # mean luma in [0, 1] below which a frame counts as night
NIGHT_HOURS = frozenset(list(range(0, 6)) + list(range(20, 24)))

# Bucket edges: mean luma; the shorter side in pixels; width / height.
BRIGHTNESS_BUCKETS = ((0.3, 'dark'), (0.7, 'medium'), (float('inf'), 'bright'))
RESOLUTION_BUCKETS = ((128, 'under_128'), (256, '128_to_255'), (512, '256_to_511'), (float('inf'), '512_and_over'))
ASPECT_BUCKETS = ((0.9, 'portrait'), (1.1, 'square'), (float('inf'), 'landscape'))


def bucket(value: float, edges) -> str:
    """The name of the first bucket whose upper edge is above `value`."""
    return next(name for upper, name in edges if value < upper)


def image_buckets(width: int, height: int, brightness: float) -> dict:
    """{slice feature: bucket name} of a picture."""
    return {BRIGHTNESS_BUCKET_KEY: bucket(brightness, BRIGHTNESS_BUCKETS),
            RESOLUTION_BUCKET_KEY: bucket(min(width, height), RESOLUTION_BUCKETS),
            ASPECT_BUCKET_KEY: bucket(width / height, ASPECT_BUCKETS)}


# Features Transform produces. IMAGE_XF holds integer pixels 0-255 (1 byte or 2 per value in the
# stored tf.Examples, 1/4 of float32); the model reads them times PIXEL_SCALE, in [0, 1].
IMAGE_XF = 'image_xf'
PIXEL_SCALE = 1 / 255
# How decoded RGB pixels become the model's input, declared once: the Transform graph computes it
# (preprocessing.py), the ONNX export writes it into the edge model's metadata.json, and the edge
# runtime follows that file. Resize the float pixels to the input size (bilinear, antialiased,
# aspect ratio not kept), round to whole levels, clip to [0, 255], multiply by PIXEL_SCALE.
PIXEL_CONTRACT = {'colour_order': 'RGB', 'resize_method': 'bilinear', 'antialias': True,
                  'keep_aspect_ratio': False, 'round': True, 'max_level': 255, 'scale': PIXEL_SCALE}
LABEL_XF = 'label_xf'
IMAGE_ID_XF = 'image_id_xf'  # passed through so Transform output can be traced to its image

# Serving signatures.
EXAMPLES_SIGNATURE = 'serving_default'
IMAGE_BYTES_SIGNATURE = 'serving_image_bytes'
PIXELS_SIGNATURE = 'serving_pixels'
