"""mrcnn_edu.data.subset and the `python -m mrcnn_edu.data` CLI, against a loopback HTTP server."""
import hashlib
import http.server
import json
import socket
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from mrcnn_edu.data import CocoDataset, resolve_data_root
from mrcnn_edu.data import __main__ as cli
from mrcnn_edu.data.subset import (DownloadError, fetch_images, make_subset, select_images,
                                   subset_dict)

# pycocotools 2.0.x + numpy 2 warn inside mask.decode; nothing we can change from here
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

CATS = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
NUM_IMAGES = 12


def official_json():
    """A small stand-in for instances_*.json: 12 images, image i has i % 4 dogs and one car
    (a crowd car on image 5), and one person on the even images."""
    images, anns = [], []
    for i in range(1, NUM_IMAGES + 1):
        name = f"{i:012d}.jpg"
        images.append({"id": i, "file_name": name, "height": 24 + i, "width": 32,
                       "coco_url": f"http://images.example/val2017/{name}"})
        objects = [18] * (i % 4) + [3] + ([1] if i % 2 == 0 else [])
        for k, cat in enumerate(objects):
            anns.append({"id": 100 * i + k, "image_id": i, "category_id": cat,
                         "bbox": [1, 1, 5 + k, 6], "area": 30.0,
                         "iscrowd": int(i == 5 and cat == 3),
                         "segmentation": [[1, 1, 6 + k, 1, 6 + k, 7, 1, 7]]})
    return {"info": {"description": "fake"}, "licenses": [], "images": images,
            "annotations": anns, "categories": CATS}


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A fake COCO download: annotations/instances_val2017.json and val2017/*.jpg."""
    root = tmp_path_factory.mktemp("coco")
    data = official_json()
    (root / "annotations").mkdir()
    (root / "val2017").mkdir()
    rng = np.random.default_rng(0)
    for img in data["images"]:
        pixels = rng.integers(0, 256, (img["height"], img["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "val2017" / img["file_name"], quality=90)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return root


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- selection -----------------------------------------------------------------------------------
def test_selection_is_deterministic_and_seeded():
    data = official_json()
    picks = select_images(data, num_images=5, seed=0)
    assert picks == select_images(data, num_images=5, seed=0)
    assert len(picks) == 5 and picks == sorted(picks)  # the JSON's order
    others = {tuple(select_images(data, num_images=5, seed=s)) for s in range(1, 6)}
    assert len(others | {tuple(picks)}) > 1


def test_selection_by_category_and_min_instances():
    data = official_json()
    # images with >= 2 dogs: i % 4 in (2, 3)
    assert select_images(data, categories=["dog"], min_instances=2) == [2, 3, 6, 7, 10, 11]
    # ids work as well as names (also as strings, as the CLI passes them)
    assert select_images(data, categories=[18], min_instances=2) == [2, 3, 6, 7, 10, 11]
    assert select_images(data, categories=["18"], min_instances=2) == [2, 3, 6, 7, 10, 11]
    # crowd instances do not count: image 5's only car is a crowd region
    assert 5 not in select_images(data, categories=["car"])
    picks = select_images(data, categories=["dog"], min_instances=2, num_images=3, seed=1)
    assert len(picks) == 3 and set(picks) <= {2, 3, 6, 7, 10, 11}
    # asking for more than qualify gives all of them
    assert select_images(data, categories=["dog"], min_instances=3, num_images=50) == [3, 7, 11]
    with pytest.raises(ValueError, match="unknown category 'horse'"):
        select_images(data, categories=["horse"])


def test_subset_dict_keeps_the_chosen_categories():
    data = official_json()
    sub = subset_dict(data, [2, 5], categories=["car", "dog"])
    assert [img["id"] for img in sub["images"]] == [2, 5]
    assert [c["name"] for c in sub["categories"]] == ["car", "dog"]
    assert {a["category_id"] for a in sub["annotations"]} == {3, 18}
    assert sorted(a["id"] for a in sub["annotations"]) == [200, 201, 202, 500, 501]
    assert sub["info"] == data["info"]


# --- copying from a local folder -----------------------------------------------------------------
def test_copy_from_a_local_folder(coco, tmp_path):
    out = make_subset(coco / "annotations/instances_val2017.json", tmp_path / "sub",
                      split="val2017", categories=["dog"], num_images=4, seed=0,
                      images_dir=coco / "val2017", progress=False)
    ds = CocoDataset(out, "val2017")
    assert len(ds) == 4 and ds.class_names == ["__background__", "dog"]
    manifest = json.loads((out / "manifest_val2017.json").read_text())
    for i in range(len(ds)):
        name = ds.image_info(i)["file_name"]
        assert sha(out / "val2017" / name) == sha(coco / "val2017" / name)
        assert manifest[name]["sha256"] == sha(coco / "val2017" / name)
        assert manifest[name]["source"] == "local"
        assert ds[i][1]["labels"].tolist() == [1] * (ds.image_ids[i] % 4)
    assert not list(out.rglob("*.part")) and not list(out.rglob("*.tmp"))
    # a re-run verifies the files against the manifest and copies nothing
    subset = json.loads((out / "annotations/instances_val2017.json").read_text())
    counts = fetch_images(subset["images"], out / "val2017", out / "manifest_val2017.json",
                          coco / "val2017", progress=False)
    assert counts == {"skipped": 4, "copied": 0, "downloaded": 0, "refetched": 0}


def test_copy_reports_a_missing_local_file(coco, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"image id \d+: .*\.jpg not found in the --images"):
        make_subset(coco / "annotations/instances_val2017.json", tmp_path / "sub", num_images=2,
                    images_dir=empty, progress=False)


# --- downloading from a loopback server ----------------------------------------------------------
class Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.root; honours Range unless server.ranges is False; server.faults maps a file
    name to a list of faults used one per request: "short" (half the body, full Content-Length),
    "garbage" (right length, wrong bytes)."""

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        self.server.log.append((name, self.headers.get("Range")))
        path = self.server.root / name
        if not path.is_file():
            self.send_error(404)
            return
        body, start = path.read_bytes(), 0
        faults = self.server.faults.get(name, [])
        fault = faults.pop(0) if faults else None
        ranged = self.headers.get("Range")
        if ranged and self.server.ranges:
            start = int(ranged.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)  # Range Not Satisfiable, as real servers answer
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        if fault == "garbage":
            payload = bytes(len(payload))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2] if fault == "short" else payload)
        if fault == "short":
            self.close_connection = True

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server(coco):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.root, httpd.log, httpd.faults, httpd.ranges = coco / "val2017", [], {}, True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def served_json(coco, tmp_path, port):
    """The fake official JSON with coco_url pointing at the loopback server on `port`."""
    data = json.loads((coco / "annotations/instances_val2017.json").read_text())
    for img in data["images"]:
        img["coco_url"] = f"http://127.0.0.1:{port}/val2017/{img['file_name']}"
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps(data))
    return path


def download_subset(ann, out, **kwargs):
    return make_subset(ann, out, split="val2017", num_images=3, seed=2, backoff=0.0,
                       timeout=5.0, progress=False, **kwargs)


def test_download_and_rerun(coco, tmp_path, server):
    ann = served_json(coco, tmp_path, server.server_port)
    out = download_subset(ann, tmp_path / "sub")
    names = sorted(p.name for p in (out / "val2017").iterdir())
    assert len(names) == 3 and len(server.log) == 3
    manifest = json.loads((out / "manifest_val2017.json").read_text())
    for name in names:
        assert sha(out / "val2017" / name) == sha(coco / "val2017" / name)
        assert manifest[name]["size"] == (coco / "val2017" / name).stat().st_size
        assert manifest[name]["source"].startswith("http://127.0.0.1:")
    assert len(CocoDataset(out, "val2017")) == 3
    download_subset(ann, out)  # complete: nothing is fetched again
    assert len(server.log) == 3


def test_resume_a_partial_download(coco, tmp_path, server):
    ann = served_json(coco, tmp_path, server.server_port)
    first = download_subset(ann, tmp_path / "probe")  # which 3 files the pick downloads
    names = sorted(p.name for p in (first / "val2017").iterdir())
    server.log.clear()
    out = tmp_path / "sub"
    (out / "val2017").mkdir(parents=True)
    whole = (coco / "val2017" / names[0]).read_bytes()
    (out / "val2017" / (names[0] + ".part")).write_bytes(whole[:100])
    download_subset(ann, out)
    assert (names[0], "bytes=100-") in server.log  # resumed, not restarted
    assert (out / "val2017" / names[0]).read_bytes() == whole
    assert not (out / "val2017" / (names[0] + ".part")).exists()


def test_a_whole_part_file_is_kept(coco, tmp_path, server):
    """Killed between the last byte and the rename: the server answers 416 to the Range."""
    ann = served_json(coco, tmp_path, server.server_port)
    name = subset_names(ann)[0]
    out = tmp_path / "sub"
    (out / "val2017").mkdir(parents=True)
    whole = (coco / "val2017" / name).read_bytes()
    (out / "val2017" / (name + ".part")).write_bytes(whole)
    download_subset(ann, out)
    assert [r for n, r in server.log if n == name] == [f"bytes={len(whole)}-"]
    assert (out / "val2017" / name).read_bytes() == whole


def test_resume_when_the_server_ignores_range(coco, tmp_path, server):
    server.ranges = False  # answers 200 with the whole file: the .part must be rewritten
    ann = served_json(coco, tmp_path, server.server_port)
    name = subset_names(ann)[0]
    out = tmp_path / "sub"
    (out / "val2017").mkdir(parents=True)
    (out / "val2017" / (name + ".part")).write_bytes(b"\xff" * 50)
    download_subset(ann, out)
    assert (out / "val2017" / name).read_bytes() == (coco / "val2017" / name).read_bytes()


def subset_names(ann):
    data = json.loads(ann.read_text())
    ids = select_images(data, num_images=3, seed=2)
    return [img["file_name"] for img in data["images"] if img["id"] in ids]


def test_short_body_is_retried_and_resumed(coco, tmp_path, server):
    ann = served_json(coco, tmp_path, server.server_port)
    name = subset_names(ann)[0]
    server.faults[name] = ["short"]
    out = download_subset(ann, tmp_path / "sub")
    assert (out / "val2017" / name).read_bytes() == (coco / "val2017" / name).read_bytes()
    requests = [r for n, r in server.log if n == name]
    assert len(requests) == 2 and requests[0] is None and requests[1].startswith("bytes=")


def test_garbage_is_refetched_then_reported(coco, tmp_path, server):
    ann = served_json(coco, tmp_path, server.server_port)
    name = subset_names(ann)[0]
    server.faults[name] = ["garbage"]  # once: the second attempt gets the real file
    out = download_subset(ann, tmp_path / "sub")
    assert (out / "val2017" / name).read_bytes() == (coco / "val2017" / name).read_bytes()
    server.faults[name] = ["garbage"] * 5  # every attempt: reported, naming the URL
    with pytest.raises(DownloadError, match=rf"http://127\.0\.0\.1:\d+/val2017/{name}.*"
                                            "not a readable image"):
        download_subset(ann, tmp_path / "sub2", retries=2)
    assert not (tmp_path / "sub2" / "val2017" / name).exists()


def test_a_changed_file_is_fetched_again(coco, tmp_path, server):
    ann = served_json(coco, tmp_path, server.server_port)
    out = download_subset(ann, tmp_path / "sub")
    name = sorted(p.name for p in (out / "val2017").iterdir())[1]
    data = bytearray((out / "val2017" / name).read_bytes())
    data[-10] ^= 0xFF  # same size, different bytes: only the checksum can tell
    (out / "val2017" / name).write_bytes(bytes(data))
    server.log.clear()
    download_subset(ann, out)
    assert [n for n, _ in server.log] == [name]
    assert (out / "val2017" / name).read_bytes() == (coco / "val2017" / name).read_bytes()


def test_missing_on_the_server_is_reported(coco, tmp_path, server):
    ann = served_json(coco, tmp_path, server.server_port)
    server.root = tmp_path / "nothing-here"
    with pytest.raises(DownloadError, match=r"http://127\.0\.0\.1:\d+/val2017/\S+\.jpg.*HTTP 404"):
        download_subset(ann, tmp_path / "sub")


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket is closed


def test_offline_gives_a_clear_message(coco, tmp_path):
    ann = served_json(coco, tmp_path, closed_port())
    with pytest.raises(DownloadError) as err:
        download_subset(ann, tmp_path / "sub", retries=2)
    message = str(err.value)
    assert "http://127.0.0.1:" in message and "/val2017/" in message
    assert "--images DIR" in message and "Offline?" in message and "2 attempts" in message


# --- the command line ----------------------------------------------------------------------------
def test_cli_subset_from_local_images(coco, tmp_path, capsys):
    out = tmp_path / "sub"
    rc = cli.main(["subset", "--annotations", str(coco / "annotations/instances_val2017.json"),
                   "--out", str(out), "--split", "val2017", "--categories", "dog", "car",
                   "--num-images", "3", "--min-instances", "2", "--seed", "1",
                   "--images", str(coco / "val2017")])
    assert rc == 0 and f"--data {out}" in capsys.readouterr().out
    ds = CocoDataset(out, "val2017")
    assert len(ds) == 3 and ds.class_names == ["__background__", "car", "dog"]


def test_cli_subset_offline(coco, tmp_path, capsys):
    ann = served_json(coco, tmp_path, closed_port())
    rc = cli.main(["subset", "--annotations", str(ann), "--out", str(tmp_path / "sub"),
                   "--num-images", "1", "--retries", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot download http://127.0.0.1:" in err and "--images DIR" in err


def test_cli_shapes(tmp_path, capsys):
    rc = cli.main(["shapes", str(tmp_path / "shapes"), "--num-images", "4", "--seed", "3",
                   "--image-size", "64", "80"])
    assert rc == 0 and "--data" in capsys.readouterr().out
    ds = CocoDataset(tmp_path / "shapes", "train2017")
    assert len(ds) == 4 and ds.load_image(0).shape == (3, 64, 80)
    assert len(CocoDataset(tmp_path / "shapes", "val2017")) == 1


def test_cli_help_lists_both_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "subset" in out and "shapes" in out


def test_subset_of_the_real_subset(tmp_path):
    """The real COCO JSON (ids, crowd RLEs, licences) goes through unchanged; copies go to tmp."""
    try:
        root = resolve_data_root()
    except FileNotFoundError:
        pytest.skip("no COCO subset")
    out = make_subset(root / "annotations/instances_val2017.json", tmp_path / "sub",
                      split="val2017", categories=["person"], num_images=3, min_instances=3,
                      seed=0, images_dir=root / "val2017", progress=False)
    ds = CocoDataset(out, "val2017")
    assert len(ds) == 3 and ds.class_names == ["__background__", "person"]
    original = CocoDataset(root, "val2017", categories=["person"])
    for i in range(len(ds)):
        _, target = ds[i]
        assert int((target["iscrowd"] == 0).sum()) >= 3
        j = original.image_ids.index(ds.image_ids[i])
        assert torch.equal(target["masks"], original[j][1]["masks"])
