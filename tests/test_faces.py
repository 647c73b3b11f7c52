"""kface.data.faces: MTCNN on real photos, face selection, and the margin / square / padding arithmetic."""

import numpy as np
import pytest
from PIL import Image

from kface.data import faces


@pytest.fixture(scope="module")
def mtcnn():
    """One MTCNN for the module (TensorFlow import + model build take ~4 s)."""
    pytest.importorskip("mtcnn")
    return faces.MtcnnDetector()


@pytest.fixture(scope="module")
def grace():
    import matplotlib.cbook

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as img:
        return img.convert("RGB")


@pytest.fixture(scope="module")
def astronaut():
    import skimage.data

    return Image.fromarray(skimage.data.astronaut())


def _inside(box, region):
    """Is the centre of ``box`` (x, y, w, h) inside ``region`` (left, top, right, bottom)?"""
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return region[0] <= cx < region[2] and region[1] <= cy < region[3]


@pytest.mark.parametrize("photo, face_region", [("grace", (150, 80, 380, 360)), ("astronaut", (160, 40, 290, 200))])
def test_mtcnn_finds_the_one_face(mtcnn, photo, face_region, request):
    img = request.getfixturevalue(photo)
    found = mtcnn.detect(np.asarray(img))
    assert len(found) == 1
    assert found[0]["confidence"] > 0.95
    assert _inside(found[0]["box"], face_region)  # regions read off the photos by eye


def test_select_policies_on_a_collage(mtcnn, grace, astronaut):
    # grace (face ~175x216 px) on the left, the astronaut at half size with her face on the canvas centre,
    # the astronaut at full size (face ~85x108) in the bottom-right corner
    canvas = Image.new("RGB", (1400, 600), "white")
    canvas.paste(grace, (0, 0))
    small = astronaut.resize((256, 256), Image.Resampling.LANCZOS)
    small_at = (700 - 112, 300 - 59)  # the astronaut's face centre (223.5, 117.5) halved lands on (700, 300)
    canvas.paste(small, small_at)
    canvas.paste(astronaut, (1400 - 512, 600 - 512))
    found = mtcnn.detect(np.asarray(canvas))
    assert len(found) == 3
    boxes = np.array([d["box"] for d in found])
    conf = np.array([d["confidence"] for d in found])
    centres = boxes[:, :2] + boxes[:, 2:] / 2

    largest = faces.select_face(found, "largest", 1400, 600)
    assert largest == int(np.argmax(boxes[:, 2] * boxes[:, 3]))
    assert _inside(found[largest]["box"], (0, 0, 512, 600))  # grace's face

    center = faces.select_face(found, "center", 1400, 600)
    assert center == int(np.argmin(np.linalg.norm(centres - [700, 300], axis=1)))
    assert _inside(found[center]["box"], (small_at[0], small_at[1], small_at[0] + 256, small_at[1] + 256))
    assert center != largest

    assert faces.select_face(found, "most_confident", 1400, 600) == int(np.argmax(conf))


DETS = [{"box": [0, 0, 50, 40], "confidence": 0.95},  # largest (2000 px^2)
        {"box": [45, 45, 10, 10], "confidence": 0.93},  # centre (50, 50) of a 100 x 100 photo
        {"box": [80, 80, 20, 20], "confidence": 0.99}]  # most confident


@pytest.mark.parametrize("policy, expected", [("largest", 0), ("center", 1), ("most_confident", 2)])
def test_select_face_known_answers(policy, expected):
    assert faces.select_face(DETS, policy, 100, 100) == expected


def test_candidates_reasons():
    assert faces.candidates([], 0.9, 20) == ([], "no_face")
    assert faces.candidates([{"box": [0, 0, 50, 50], "confidence": 0.5}], 0.9, 20) == ([], "low_confidence")
    assert faces.candidates([{"box": [0, 0, 19, 15], "confidence": 0.95}], 0.9, 20) == ([], "too_small")
    kept, reason = faces.candidates(DETS + [{"box": [0, 0, 60, 60], "confidence": 0.2}], 0.9, 20)
    assert reason is None and kept == [DETS[0], DETS[2]]  # the 10 px face is too small; 20 px is enough
    kept, _ = faces.candidates(DETS, 0.9, 10)
    assert kept == DETS


# (box, margin, photo w x h) -> (left, top, side), padding (left, top, right, bottom); worked by hand:
# side = round((1 + 2 * margin) * max(w, h)), centred on the box centre.
CROPS = [
    ((40, 30, 20, 40), 0.25, (100, 100), (20, 20, 60), (0, 0, 0, 0)),  # centre: side 60 around (50, 50)
    ((0, 40, 20, 20), 0.25, (100, 100), (-5, 35, 30), (5, 0, 0, 0)),  # left border
    ((90, 40, 10, 10), 0.5, (100, 100), (85, 35, 20), (0, 0, 5, 0)),  # right border
    ((40, 0, 20, 20), 0.25, (100, 100), (35, -5, 30), (0, 5, 0, 0)),  # top border
    ((40, 90, 20, 10), 0.25, (100, 100), (35, 80, 30), (0, 0, 0, 10)),  # bottom border: centre y 95
    ((0, 0, 100, 100), 0.25, (100, 100), (-25, -25, 150), (25, 25, 25, 25)),  # larger than the photo
    ((10, 0, 30, 60), 0.0, (50, 60), (-5, 0, 60), (5, 0, 5, 0)),  # tall box in a narrow photo: both sides
    ((0, 0, 3, 3), 0.0, (10, 10), (0, 0, 3), (0, 0, 0, 0)),  # 1.5 rounds half up, not to even
]


@pytest.mark.parametrize("box, margin, size, window, padding", CROPS)
def test_square_crop_arithmetic(box, margin, size, window, padding):
    crop = faces.square_crop(box, margin)
    assert (crop.left, crop.top, crop.side) == window
    assert crop.padding(*size) == padding
    assert crop.is_padded(*size) == any(padding)


@pytest.mark.parametrize("mode", faces.PADDING_MODES)
@pytest.mark.parametrize("box, margin, size, window, padding", CROPS[:7])
def test_cut_matches_padding_the_whole_photo(mode, box, margin, size, window, padding):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    crop = faces.square_crop(box, margin)
    # independent method: pad the whole photo by more than any window needs, then index
    p = 30
    big = np.pad(photo, ((p, p), (p, p), (0, 0)), mode=mode)
    expected = big[crop.top + p: crop.top + p + crop.side, crop.left + p: crop.left + p + crop.side]
    got = np.asarray(faces.cut(Image.fromarray(photo), crop, padding=mode))
    assert got.shape == (crop.side, crop.side, 3)
    np.testing.assert_array_equal(got, expected)


def test_centre_square_and_centre_detector():
    assert faces.centre_square(100, 60) == faces.SquareCrop(20, 0, 60)
    assert faces.centre_square(60, 101) == faces.SquareCrop(0, 20, 60)
    found = faces.CentreDetector().detect(np.zeros((101, 60, 3), np.uint8))
    assert found == [{"box": [0.0, 20.0, 60.0, 60.0], "confidence": 1.0}]


def test_resize_is_antialiased():
    # a 1-px checkerboard: any point sampler gives 0 or 255, an antialiasing filter gives mid-grey
    board = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)
    small = np.asarray(faces.resize(Image.fromarray(board).convert("RGB"), 32)).astype(float)
    assert small.shape == (32, 32, 3)
    assert abs(small.mean() - 127.5) < 2 and small.std() < 3
