"""ONNX Runtime: export once per encoder id, verify against torch, cache, rebuild, fall back;
and `onnx:PATH` encoders for users' own models. Real exports of real (small) torch models."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from vismem import Memory
from vismem.encoders import EncoderFallbackWarning, EncoderOptions, Preprocessing, create_encoder
from vismem.encoders.onnx import cache_dir_for
from vismem.encoders.runtime import torch_encoder
from vismem.errors import EncoderError, InvalidInputError

PREP = Preprocessing(32, 36)


class Tiny(torch.nn.Module):
    """A small real CNN: exports in seconds."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.BatchNorm2d(8),
            torch.nn.Conv2d(8, 16, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x):
        return self.net(x)


class ExportsWrong(Tiny):
    """Behaves differently while being exported: what an exporter bug looks like."""

    def forward(self, x):
        y = super().forward(x)
        return -y if torch.compiler.is_exporting() else y


class ExportsBroken(Tiny):
    """Data-dependent Python in forward: the exported graph does not load."""

    def forward(self, x):
        return super().forward(x) * float(np.asarray(x.detach().numpy()).mean() > -100)


def tiny(model=None, options=None, name="tiny"):
    return torch_encoder(name, 16, PREP, "seed0", model if model is not None else Tiny(), options)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VISMEM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def photos(n=6):
    names = ("chelsea", "coffee", "astronaut", "rocket", "camera", "horse")
    return [Image.fromarray(getattr(data, name)()).convert("RGB") for name in names[:n]]


def test_export_is_verified_cached_and_reused(cache, capfd):
    encoder = tiny()
    assert (encoder.runtime.runtime, encoder.runtime.precision, encoder.runtime.device) == ("onnx", "fp32", "cpu")
    folder = cache_dir_for(encoder.id)
    check = json.loads((folder / "check.json").read_text())
    assert check["status"] == "ok" and check["min_cosine"] >= 0.9999 and check["encoder_id"] == encoder.id
    assert "exporting tiny:seed0" in capfd.readouterr().err
    reference = tiny(options=EncoderOptions(runtime="torch"))
    images = photos()
    a, b = reference.encode(images), encoder.encode(images)
    assert np.min(np.sum(a * b, axis=1)) >= 0.9999
    assert encoder.encode(images[:1]).shape == (1, 16)  # any batch size, down to one
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    again = tiny()
    assert again.runtime.runtime == "onnx" and (folder / "model.onnx").stat().st_mtime_ns == stamp
    assert "exporting" not in capfd.readouterr().err


@pytest.fixture(scope="module")
def exported_cache(tmp_path_factory):
    """An ONNX cache holding Tiny's verified export, made once for the module (an export
    takes ~1-2 s); a test copies it to damage its own copy."""
    root = tmp_path_factory.mktemp("exported") / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VISMEM_CACHE", str(root))
        assert tiny().runtime.runtime == "onnx"
    return root / "onnx"


@pytest.mark.parametrize("damage", ["garbage model", "truncated model", "wrong reference", "old format",
                                    "check not an object"])
def test_a_stale_or_corrupt_cached_model_is_rebuilt(cache, exported_cache, damage, capfd):
    """A cached export damaged in each way is exported again, not used. Each test damages its
    own copy of one verified export (test_export_is_verified_cached_and_reused makes its own)."""
    shutil.copytree(exported_cache, cache)
    encoder = tiny()
    assert encoder.runtime.runtime == "onnx" and "exporting" not in capfd.readouterr().err  # the copy serves
    folder = cache_dir_for(encoder.id)
    model = folder / "model.onnx"
    if damage == "garbage model":
        model.write_bytes(b"\x00not a model" * 100)
    elif damage == "truncated model":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif damage == "wrong reference":
        np.save(folder / "reference.npy", -np.load(folder / "reference.npy"))
    elif damage == "check not an object":
        (folder / "check.json").write_text("null")
    else:
        check = json.loads((folder / "check.json").read_text())
        (folder / "check.json").write_text(json.dumps(check | {"export_format": 0}))
    capfd.readouterr()
    rebuilt = tiny()
    assert rebuilt.runtime.runtime == "onnx" and rebuilt.runtime.notes == ()
    assert "exporting tiny:seed0" in capfd.readouterr().err
    assert json.loads((folder / "check.json").read_text())["status"] == "ok"
    a, b = tiny(options=EncoderOptions(runtime="torch")).encode(photos(2)), rebuilt.encode(photos(2))
    assert np.min(np.sum(a * b, axis=1)) >= 0.9999


@pytest.mark.parametrize("model, reason", [(ExportsWrong, "disagrees with torch"), (ExportsBroken, "")])
def test_a_refused_export_falls_back_to_torch_and_says_so(cache, model, reason, capfd):
    with pytest.warns(EncoderFallbackWarning, match="running torch instead") as caught:
        encoder = tiny(model())
    assert encoder.runtime.runtime == "torch" and "running torch instead" in encoder.runtime.notes[0]
    assert reason in str(caught[0].message)
    vectors = encoder.encode(photos(2))
    expected = tiny(options=EncoderOptions(runtime="torch")).encode(photos(2))
    np.testing.assert_allclose(vectors, expected, atol=1e-5)  # the fallback is the true model
    check = json.loads((cache_dir_for(encoder.id) / "check.json").read_text())
    assert check["status"] == "refused"
    capfd.readouterr()
    with pytest.warns(EncoderFallbackWarning):
        tiny(model())  # the refusal is remembered: no second export
    assert "exporting" not in capfd.readouterr().err


def test_an_unwritable_cache_falls_back_to_torch_and_names_the_fix(tmp_path, monkeypatch):
    # a read-only home (containers, clusters): VISMEM_CACHE's folder cannot be made
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("VISMEM_CACHE", str(tmp_path / "file"))
    with pytest.warns(EncoderFallbackWarning, match="VISMEM_CACHE"):
        encoder = tiny()
    assert encoder.runtime.runtime == "torch"
    expected = tiny(options=EncoderOptions(runtime="torch")).encode(photos(2))
    np.testing.assert_allclose(encoder.encode(photos(2)), expected, atol=1e-5)


def test_runtime_choice_is_not_identity(cache, lite0):
    """The real offline encoder through ONNX Runtime matches torch: memories stay valid."""
    assert lite0.runtime.runtime == "onnx"
    eager = create_encoder("efficientnet_lite0", options=EncoderOptions(runtime="torch"))
    assert eager.id == lite0.id
    a, b = eager.encode(photos()), lite0.encode(photos())
    assert np.min(np.sum(a * b, axis=1)) >= 0.9999


def test_runtime_onnx_for_a_model_free_encoder_is_an_error():
    with pytest.raises(InvalidInputError, match="no model"):
        create_encoder("pixels", options=EncoderOptions(runtime="onnx"))


# ---- onnx:PATH ---------------------------------------------------------------------------


def export_user_model(path, metadata=None, channels_last_input=False):
    """Export Tiny the way a user would (float input), optionally with vismem.* metadata."""
    import onnx

    model = Tiny().eval()
    example = torch.zeros(2, 3, 32, 32)
    if channels_last_input:
        class NHWC(torch.nn.Module):
            def forward(self, x):
                return model(x.permute(0, 3, 1, 2))

        wrapped, example = NHWC(), example.permute(0, 2, 3, 1)
    else:
        wrapped = model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (example,), str(path), dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    if metadata:
        graph = onnx.load(str(path))
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, str(path))
    return model


def test_onnx_path_encoder_reads_preprocessing_from_metadata(tmp_path):
    path = tmp_path / "mine.onnx"
    model = export_user_model(path, {"vismem.resize_size": "40", "vismem.mean": "0.5,0.5,0.5",
                                     "vismem.std": "0.25,0.25,0.25", "vismem.interpolation": "bicubic"})
    encoder = create_encoder(f"onnx:{path}")
    assert encoder.dim == 16 and encoder.runtime.runtime == "onnx"
    assert encoder.preprocessing == Preprocessing(32, 40, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bicubic")
    images = photos(3)
    pixels = encoder.preprocess(images)
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.inference_mode():
        expected = model(x).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(encoder.encode(images), expected, atol=1e-4)
    # identity: the file's digest plus preprocessing, wherever the file lies
    moved = tmp_path / "elsewhere" / "copy.onnx"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    assert create_encoder(f"onnx:{moved}").id == encoder.id
    assert create_encoder(f"onnx:{path}?resize_size=36").id != encoder.id  # options override metadata


def test_onnx_path_encoder_with_options_nhwc_and_a_memory(tmp_path, digit_folders):
    path = tmp_path / "nhwc.onnx"
    export_user_model(path, channels_last_input=True)
    spec = f"onnx:{path}?mean=0.5,0.5,0.5&std=0.5,0.5,0.5&resize_size=32"
    encoder = create_encoder(spec)
    assert encoder.preprocessing.image_size == 32 and encoder.preprocessing.resize_size == 32
    train, test = digit_folders
    with Memory.create(tmp_path / "m", encoder=spec) as memory:
        report = memory.add_images([train])
        assert len(report.added) == 80 and memory.dim == 16
    with Memory.open(tmp_path / "m") as memory:  # rebuilt from the stored name, same id
        decision = memory.classify([next(iter(sorted(test.rglob("*.png"))))])[0]
        assert len(decision.neighbors) == 10


def test_onnx_path_errors_name_the_fix(tmp_path):
    with pytest.raises(EncoderError, match="not found"):
        create_encoder(f"onnx:{tmp_path / 'missing.onnx'}")
    path = tmp_path / "m.onnx"
    export_user_model(path)
    with pytest.raises(InvalidInputError, match="runs on ONNX Runtime only, not torch: drop --runtime torch"):
        create_encoder(f"onnx:{path}", options=EncoderOptions(runtime="torch"))
    with pytest.raises(EncoderError, match="unknown option"):
        create_encoder(f"onnx:{path}?size=3")
    with pytest.raises(EncoderError, match="needs 3 values"):
        create_encoder(f"onnx:{path}?mean=0.5")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(EncoderError, match="cannot load"):
        create_encoder(f"onnx:{tmp_path / 'junk.onnx'}")


@pytest.fixture(scope="module")
def fixed_input_model(tmp_path_factory):
    """Tiny exported with its input fixed at 1x3x32x32, once for the module: the tests only
    build encoders from the file."""
    path = tmp_path_factory.mktemp("fixed") / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tiny().eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=True)
    return path


@pytest.mark.parametrize("options, match", [
    ("image_size=-4", "image_size must be a positive integer"),
    ("resize_size=0", "resize_size must be a positive integer"),
    ("std=0.5,0,0.5", "std must not be 0"),  # every vector would be NaN
    ("dim=10", "returns 16-d vectors, not dim=10"),
    ("image_size=64", "does not run on 64x64 images"),  # its input is fixed at 32x32
])
def test_onnx_path_options_that_cannot_work_fail_when_built(fixed_input_model, options, match):
    """Not at the first add, after a memory was created for it."""
    with pytest.raises(EncoderError, match=match):
        create_encoder(f"onnx:{fixed_input_model}?{options}")


def test_an_export_interrupted_by_ctrl_c_leaves_no_staging_folder(cache):
    """An export takes from seconds to minutes on first use, and users press Ctrl-C; each
    interrupted one left its staging folder (the size of the model) in the cache for good."""
    from vismem.encoders.onnx import exported_forward

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        exported_forward(Tiny(), "tiny:seed0:abc", PREP, interrupted)
    assert list(cache.iterdir()) == []
    assert tiny().runtime.runtime == "onnx"  # and the next run exports as if nothing happened


def test_an_onnx_path_encoder_refuses_a_precision_or_device_it_cannot_run_on(fixed_input_model):
    """It ran fp32 on the CPU when asked for fp16, or for --device mps, without a word."""
    with pytest.raises(InvalidInputError, match=r"encoder onnx:.* runs in fp32 only, not fp16"):
        create_encoder(f"onnx:{fixed_input_model}", options=EncoderOptions(precision="fp16"))
    with pytest.raises(InvalidInputError, match=r"encoder onnx:.* runs on cpu or cuda only, not mps"):
        create_encoder(f"onnx:{fixed_input_model}", options=EncoderOptions(device="mps"))
    encoder = create_encoder(f"onnx:{fixed_input_model}", options=EncoderOptions(device="cpu", precision="fp32"))
    assert (encoder.runtime.device, encoder.runtime.precision) == ("cpu", "fp32")
