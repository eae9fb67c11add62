"""GObjaverseDataset and ImageCaptionDataset on a small toy world written to a temporary folder."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from videomv.data import GObjaverseDataset, ImageCaptionDataset, collate, parse_background
from videomv.toy import world as toyworld
from videomv.toy.writer import build_dataset
from videomv.geometry import gobjaverse_json_to_c2w

SEED = 3
NUM_OBJECTS = 4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy") / "toy"
    build_dataset(root, num_objects=NUM_OBJECTS, resolution=32, seed=SEED, workers=1, progress=False)
    return root


@pytest.fixture()
def toy_copy(toy_root, tmp_path) -> Path:
    """A private copy that a test may damage."""
    return Path(shutil.copytree(toy_root, tmp_path / "toy"))


def _view_file(root, index, view, suffix=".png"):
    return _view_dir(root, index, view) / f"{view:05d}{suffix}"


def _view_dir(root, index, view):
    return root / f"0/toy_{index:06d}/campos_512_v4/{view:05d}"


def test_items_shapes_ranges_and_cameras(toy_root):
    ds = GObjaverseDataset(toy_root, resolution=32, caption_suffix=", 3d asset")
    assert len(ds) == NUM_OBJECTS
    captions = json.loads((toy_root / "captions.json").read_text())
    for i in range(NUM_OBJECTS):
        item = ds[i]
        assert item["images"].shape == (24, 3, 32, 32) and item["images"].dtype == torch.float32
        assert item["alphas"].shape == (24, 1, 32, 32) and item["cameras"].shape == (24, 4, 4)
        assert item["images"].min() >= -1 and item["images"].max() <= 1
        assert item["alphas"].min() >= 0 and item["alphas"].max() <= 1
        assert item["object_id"] == f"0/toy_{i:06d}" and item["has_cameras"] is True
        assert item["caption"] == captions[item["object_id"]] + ", 3d asset"
        assert item["fovy"] == pytest.approx(toyworld.FOVY)
        # cameras: as stored in the json files, and as the generator placed them
        for v in (0, 7, 23):
            meta = json.loads(_view_file(toy_root, i, v, ".json").read_text())
            torch.testing.assert_close(item["cameras"][v], gobjaverse_json_to_c2w(meta))
        obj = toyworld.sample_object(SEED, i)
        torch.testing.assert_close(item["cameras"], toyworld.orbit_for(obj)[0], atol=1e-5, rtol=0)
        # pixels: the stored png, composited on grey
        png = np.asarray(Image.open(_view_file(toy_root, i, 5)), dtype=np.float32) / 255
        rgb, alpha = torch.from_numpy(png[..., :3]).permute(2, 0, 1), torch.from_numpy(png[..., 3:]).permute(2, 0, 1)
        expected = rgb * alpha + (128 / 255) * (1 - alpha)
        torch.testing.assert_close(item["images"][5], expected * 2 - 1, atol=1e-6, rtol=0)
        torch.testing.assert_close(item["alphas"][5], alpha)


@pytest.mark.parametrize("background", ["grey", "white", (0.2, 0.4, 0.6)])
@pytest.mark.parametrize("resolution", [32, 16])
def test_background_exactly_where_alpha_is_zero(toy_root, background, resolution):
    ds = GObjaverseDataset(toy_root, resolution=resolution, background=background, view_indices=[0, 9])
    item = ds[1]
    assert item["images"].shape == (2, 3, resolution, resolution)
    bg = parse_background(background) * 2 - 1
    empty = item["alphas"][:, 0] == 0
    full = item["alphas"][:, 0] == 1
    assert empty.sum() > 0 and full.sum() > 0
    pixels = item["images"].permute(0, 2, 3, 1)
    torch.testing.assert_close(pixels[empty], bg.expand(int(empty.sum()), 3), atol=1e-6, rtol=0)
    assert (pixels[full] - bg).abs().sum(-1).max() > 0.1  # the object is not background


def test_resize_is_antialiased(toy_root):
    """Downsampling matches PIL's antialiased bilinear resize (an independent implementation)."""
    half = GObjaverseDataset(toy_root, resolution=12, view_indices=[0])[0]
    png = Image.open(_view_file(toy_root, 0, 0))
    alpha = np.asarray(png.getchannel("A").convert("F").resize((12, 12), Image.BILINEAR)) / 255
    torch.testing.assert_close(half["alphas"][0, 0], torch.from_numpy(alpha).float(), atol=1e-4, rtol=0)
    # the coverage is preserved (no aliasing): the mean alpha barely changes
    full = GObjaverseDataset(toy_root, resolution=32, view_indices=[0])[0]
    assert half["alphas"].mean().item() == pytest.approx(full["alphas"].mean().item(), rel=0.02)


def test_object_lists_and_view_indices(toy_root):
    scanned = GObjaverseDataset(toy_root, resolution=16)
    listed = GObjaverseDataset(toy_root, objects=["0/toy_000002", "0/toy_000000"], resolution=16)
    from_file = GObjaverseDataset(toy_root, objects=toy_root / "train.txt", resolution=16)
    assert scanned.objects == [f"0/toy_{i:06d}" for i in range(NUM_OBJECTS)]
    assert listed.objects == ["0/toy_000002", "0/toy_000000"]
    assert from_file.objects == (toy_root / "train.txt").read_text().split()
    torch.testing.assert_close(listed[0]["images"], scanned[2]["images"])
    four = GObjaverseDataset(toy_root, resolution=16, view_indices=[0, 6, 12, 18])[2]
    assert four["images"].shape == (4, 3, 16, 16) and four["views"].tolist() == [0, 6, 12, 18]
    torch.testing.assert_close(four["cameras"], scanned[2]["cameras"][[0, 6, 12, 18]])
    torch.testing.assert_close(four["images"], scanned[2]["images"][[0, 6, 12, 18]])
    batch = collate([four, GObjaverseDataset(toy_root, resolution=16, view_indices=[0, 6, 12, 18])[1]])
    assert batch["images"].shape == (2, 4, 3, 16, 16) and batch["cameras"].shape == (2, 4, 4, 4)
    assert batch["object_id"] == ["0/toy_000002", "0/toy_000001"] and batch["has_cameras"].all()


def test_captions_argument(toy_root):
    ds = GObjaverseDataset(toy_root, resolution=8, view_indices=[0], captions={"0/toy_000000": "custom"}, caption_suffix="!")
    assert ds[0]["caption"] == "custom!"
    assert ds[1]["caption"] == "!"  # no caption -> empty (warned at construction)


def test_bad_arguments(toy_root, tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        GObjaverseDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no objects found"):
        GObjaverseDataset(tmp_path)
    with pytest.raises(ValueError, match="background"):
        GObjaverseDataset(toy_root, background="pink")
    with pytest.raises(ValueError, match="background"):
        GObjaverseDataset(toy_root, background=(0.5, 2.0, 0.0))
    with pytest.raises(ValueError, match="view_indices"):
        GObjaverseDataset(toy_root, view_indices=[0, 24])
    with pytest.raises(ValueError, match="does not exist"):
        GObjaverseDataset(toy_root, objects=tmp_path / "nope.txt")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        GObjaverseDataset(toy_root, captions=tmp_path / "bad.json")
    with pytest.raises(IndexError):
        GObjaverseDataset(toy_root, resolution=8)[NUM_OBJECTS]


def test_corrupt_and_missing_files_are_skipped_and_counted(toy_copy, caplog):
    _view_file(toy_copy, 1, 3).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _view_file(toy_copy, 2, 5, ".json").unlink()
    ds = GObjaverseDataset(toy_copy, resolution=16, view_indices=[0, 3, 5])
    with caplog.at_level(logging.WARNING, logger="videomv.data"):
        items = [ds[i] for i in range(len(ds))]
    ids = [it["object_id"] for it in items]
    assert ids[0] == "0/toy_000000" and ids[3] == "0/toy_000003"
    assert set(ids[1:3]) <= {"0/toy_000000", "0/toy_000003"}
    assert ds.num_skipped == 2 and sorted(ds.skipped) == ["0/toy_000001", "0/toy_000002"]
    assert "00003.png" in ds.skipped["0/toy_000001"] and "00005.json" in ds.skipped["0/toy_000002"]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("0/toy_000001" in m and "00003.png" in m for m in messages)
    assert any("0/toy_000002" in m and "00005.json" in m for m in messages)
    # a known bad item is not retried nor counted twice, and the same index gives the same item
    assert ds[1]["object_id"] == ids[1] and ds[2]["object_id"] == ids[2]
    assert ds.num_skipped == 2
    # views that are not requested do not matter; a missing view folder does
    shutil.rmtree(_view_dir(toy_copy, 3, 23))
    ds = GObjaverseDataset(toy_copy, resolution=16, view_indices=[0])
    assert ds[3]["object_id"] != "0/toy_000003" and list(ds.skipped) == ["0/toy_000003"]


def test_replacements_of_bad_items_spread_over_the_dataset(tmp_path, caplog):
    """Replacements are drawn, not the next item: with every other item bad, no good item stands in
    for more than a few bad ones (the next-item rule gave each good item exactly one extra)."""
    from videomv.data.common import ItemError, SkippingDataset

    class Half(SkippingDataset):
        def __len__(self):
            return 200

        def item_id(self, index):
            return f"item{index}"

        def load(self, index):
            if index < 100:  # a bad run of 100 consecutive items
                raise ItemError("bad")
            return {"index": index}

    ds = Half(seed=1)
    with caplog.at_level(logging.ERROR, logger="videomv.data"):
        served = [ds[i]["index"] for i in range(200)]
    counts = np.bincount(served, minlength=200)
    assert counts[:100].sum() == 0 and counts[100:].sum() == 200
    assert counts.max() <= 8, counts.max()  # the next-item rule gave item 100 a count of 101
    assert served == [Half(seed=1)[i]["index"] for i in range(200)]  # reproducible from the seed
    assert served != [Half(seed=2)[i]["index"] for i in range(200)]
    assert len(ds.skipped) == 100 and ds.skipped["item7"] == "bad"


def test_bad_camera_json_is_skipped(toy_copy, caplog):
    _view_file(toy_copy, 0, 0, ".json").write_text('{"x": [1, 0]}')
    _view_file(toy_copy, 1, 0, ".json").write_text("not json")
    ds = GObjaverseDataset(toy_copy, resolution=8, view_indices=[0])
    with caplog.at_level(logging.WARNING, logger="videomv.data"):
        assert ds[0]["object_id"] in ("0/toy_000002", "0/toy_000003")
        ds[1]
    assert sorted(ds.skipped) == ["0/toy_000000", "0/toy_000001"]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_non_finite_camera_is_skipped_naming_the_object(toy_copy, caplog):
    meta = json.loads(_view_file(toy_copy, 1, 4, ".json").read_text())
    meta["origin"][1] = float("nan")
    _view_file(toy_copy, 1, 4, ".json").write_text(json.dumps(meta))  # json writes NaN, json.loads reads it
    meta = json.loads(_view_file(toy_copy, 2, 0, ".json").read_text())
    meta["y_fov"] = float("inf")
    _view_file(toy_copy, 2, 0, ".json").write_text(json.dumps(meta))
    ds = GObjaverseDataset(toy_copy, resolution=8, view_indices=[0, 4])
    with caplog.at_level(logging.WARNING, logger="videomv.data"):
        assert ds[1]["object_id"] != "0/toy_000001" and ds[2]["object_id"] != "0/toy_000002"
    assert sorted(ds.skipped) == ["0/toy_000001", "0/toy_000002"]
    assert "00004.json" in ds.skipped["0/toy_000001"] and "non-finite" in ds.skipped["0/toy_000001"]
    assert "non-finite" in ds.skipped["0/toy_000002"]


def test_rgb_without_alpha_and_non_square_views_are_skipped(toy_copy, caplog):
    png = _view_file(toy_copy, 0, 2)
    Image.open(png).convert("RGB").save(png)  # the object composited on black, as a bad export gives
    png = _view_file(toy_copy, 3, 2)
    Image.open(png).crop((0, 0, 32, 24)).save(png)  # 32 x 24
    ds = GObjaverseDataset(toy_copy, resolution=16, view_indices=[0, 2])
    with caplog.at_level(logging.WARNING, logger="videomv.data"):
        assert all(ds[i]["object_id"] in ("0/toy_000001", "0/toy_000002") for i in range(4))
    assert "no alpha channel" in ds.skipped["0/toy_000000"] and "00002.png" in ds.skipped["0/toy_000000"]
    assert "32x24" in ds.skipped["0/toy_000003"] and "square" in ds.skipped["0/toy_000003"]


def test_missing_captions_are_listed_per_object_or_skipped(toy_root, caplog):
    captions = {"0/toy_000000": "a", "toy_000002": "bare id, as Cap3D keys objects"}
    with caplog.at_level(logging.WARNING, logger="videomv.data"):
        ds = GObjaverseDataset(toy_root, resolution=8, view_indices=[0], captions=captions)
    assert ds.missing_captions == ["0/toy_000001", "0/toy_000003"]
    warning = [r.getMessage() for r in caplog.records if "no caption" in r.getMessage()][0]
    assert "2 of 4" in warning and "0/toy_000001" in warning and "0/toy_000003" in warning
    assert ds[2]["caption"] == "bare id, as Cap3D keys objects" and ds[1]["caption"] == ""
    strict = GObjaverseDataset(toy_root, resolution=8, view_indices=[0], captions=captions, require_captions=True)
    with caplog.at_level(logging.ERROR, logger="videomv.data"):
        assert {strict[i]["object_id"] for i in range(4)} <= {"0/toy_000000", "0/toy_000002"}
    assert strict.skipped == {"0/toy_000001": "no caption", "0/toy_000003": "no caption"}


def test_all_bad_raises(toy_copy, caplog):
    for i in range(NUM_OBJECTS):
        _view_file(toy_copy, i, 0).write_bytes(b"garbage")
    ds = GObjaverseDataset(toy_copy, resolution=8, view_indices=[0])
    with caplog.at_level(logging.WARNING, logger="videomv.data"), pytest.raises(RuntimeError, match="none of its 4 items"):
        ds[2]
    assert ds.num_skipped == NUM_OBJECTS


def test_random_elevation_subset(toy_copy):
    # give object 0 a second 24-view orbit (views 24..47) made from object 1's views
    for v in range(24):
        _view_dir(toy_copy, 0, 24 + v).mkdir()
        for suffix in (".png", ".json"):
            shutil.copy(_view_file(toy_copy, 1, v, suffix), _view_file(toy_copy, 0, 24 + v, suffix))
    fixed = GObjaverseDataset(toy_copy, resolution=8, view_indices=[0, 12])
    assert all(fixed[0]["views"].tolist() == [0, 12] for _ in range(5))
    rand = GObjaverseDataset(toy_copy, resolution=8, view_indices=[0, 12], random_elevation_subset=True)
    seen = {}
    for _ in range(20):
        item = rand[0]
        seen[tuple(item["views"].tolist())] = item
    assert set(seen) == {(0, 12), (24, 36)}
    torch.testing.assert_close(seen[(24, 36)]["cameras"], fixed[1]["cameras"])
    torch.testing.assert_close(seen[(0, 12)]["cameras"], fixed[0]["cameras"])
    assert all(rand[2]["views"].tolist() == [0, 12] for _ in range(5))  # a single orbit: always it


# ------------------------------------------------------------------------------------------- #
# Image folders
# ------------------------------------------------------------------------------------------- #


def _image_folder(root: Path) -> Path:
    root.mkdir()
    wide = np.zeros((20, 40, 4), dtype=np.uint8)  # H=20, W=40: center crop keeps columns 10..29
    wide[:, :10] = (255, 0, 0, 255)
    wide[:, 10:20] = (0, 255, 0, 255)
    wide[:, 20:30] = (0, 0, 255, 0)  # transparent
    wide[:, 30:] = (255, 255, 0, 255)
    Image.fromarray(wide, "RGBA").save(root / "wide.png")
    (root / "wide.txt").write_text("a wide picture\n")
    tall = np.full((30, 10, 3), 200, dtype=np.uint8)
    Image.fromarray(tall, "RGB").save(root / "tall.jpg")
    (root / "captions.json").write_text(json.dumps({"tall.jpg": "a tall picture", "wide": "ignored, txt wins"}))
    return root


def test_image_folder_items(tmp_path):
    ds = ImageCaptionDataset(_image_folder(tmp_path / "imgs"), resolution=10, background="white", caption_suffix=", photo")
    assert len(ds) == 2
    tall, wide = ds[0], ds[1]
    assert (tall["object_id"], wide["object_id"]) == ("tall.jpg", "wide.png")
    assert wide["caption"] == "a wide picture, photo" and tall["caption"] == "a tall picture, photo"
    for item in (tall, wide):
        assert item["images"].shape == (1, 3, 10, 10) and item["alphas"].shape == (1, 1, 10, 10)
        torch.testing.assert_close(item["cameras"], torch.eye(4)[None])
        assert item["has_cameras"] is False
    # center crop of the 40x20 image: left half green, right half transparent -> white
    img = wide["images"][0]
    torch.testing.assert_close(img[:, :, :4], torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 10, 4))
    torch.testing.assert_close(img[:, :, 6:], torch.ones(3, 10, 4))
    torch.testing.assert_close(wide["alphas"][0, 0, :, 6:], torch.zeros(10, 4))
    torch.testing.assert_close(tall["alphas"], torch.ones(1, 1, 10, 10))
    assert tall["images"].sub(200 / 255 * 2 - 1).abs().max() < 0.02  # jpeg
    batch = collate([tall, wide])
    assert batch["images"].shape == (2, 1, 3, 10, 10) and not batch["has_cameras"].any()


def test_image_folder_skips_bad_images_and_rejects_empty(tmp_path, caplog):
    root = _image_folder(tmp_path / "imgs")
    (root / "broken.png").write_bytes(b"nope")
    ds = ImageCaptionDataset(root, resolution=8)
    with caplog.at_level(logging.WARNING, logger="videomv.data"):
        assert ds[0]["object_id"] in ("tall.jpg", "wide.png")  # broken.png sorts first
    assert list(ds.skipped) == ["broken.png"]
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageCaptionDataset(tmp_path / "empty")


def _published_tree(root: Path, naming: str = "published") -> list[str]:
    """Two objects with 3 views each, written by hand in the G-Objaverse naming (or the older one)."""
    from videomv.geometry import c2w_to_gobjaverse_json, orbit_camera

    ids = ["0/aaa111", "7/bbb222"]
    for k, object_id in enumerate(ids):
        for v in range(3):
            name = f"{v:05d}" if naming == "published" else "00000"
            folder = root / object_id / "campos_512_v4" / f"{v:05d}"
            folder.mkdir(parents=True)
            rgba = np.zeros((12, 12, 4), np.uint8)
            rgba[3:9, 2 + v : 8 + v] = (200, 10 * k, 30, 255)
            Image.fromarray(rgba, "RGBA").save(folder / f"{name}.png")
            meta = c2w_to_gobjaverse_json(orbit_camera(20.0, 120.0 * v, 1.5), 39.6)
            (folder / f"{name}.json").write_text(json.dumps(meta))
    return ids


def test_published_layout_with_release_object_list_and_cap3d_captions(tmp_path):
    from videomv.geometry import orbit_camera

    ids = _published_tree(tmp_path / "gobj")
    (tmp_path / "gobjaverse_280k.json").write_text(json.dumps(ids[::-1]))
    (tmp_path / "text_captions_cap3d.json").write_text(json.dumps({"aaa111": "a red box", "bbb222": "a pink box"}))
    ds = GObjaverseDataset(tmp_path / "gobj", objects=tmp_path / "gobjaverse_280k.json", num_views=3, resolution=12,
                           captions=tmp_path / "text_captions_cap3d.json", caption_suffix=", 3d asset")
    assert ds.objects == ids[::-1] and ds.missing_captions == []
    item = ds[1]
    assert item["object_id"] == "0/aaa111" and item["caption"] == "a red box, 3d asset"
    assert item["images"].shape == (3, 3, 12, 12) and item["fovy"] == pytest.approx(39.6)
    torch.testing.assert_close(item["cameras"][2], orbit_camera(20.0, 240.0, 1.5), atol=1e-5, rtol=0)
    assert item["alphas"][1, 0, 3:9, 3:9].min() == 1 and item["alphas"][1, 0, :, :3].max() == 0  # view 1 shifted by 1
    assert ds.num_skipped == 0
    (tmp_path / "bad_list.json").write_text(json.dumps({"0/aaa111": 1}))
    with pytest.raises(ValueError, match="JSON list of '<dir_id>/<obj_id>' strings"):
        GObjaverseDataset(tmp_path / "gobj", objects=tmp_path / "bad_list.json", num_views=3)


def test_older_view_naming_is_refused_saying_what_is_expected(tmp_path):
    from videomv.data.gobjaverse import LayoutError

    _published_tree(tmp_path / "old", naming="old")
    with pytest.raises(LayoutError, match=r"00001/00000.png.*00001/00001.png and 00001.json"):
        GObjaverseDataset(tmp_path / "old", num_views=3, resolution=12)
