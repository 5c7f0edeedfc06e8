"""Where encoders run: device choice, half precision checked against fp32, the CLI options."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from vismem import Memory
from vismem.encoders import EncoderFallbackWarning, EncoderOptions, create_encoder
from vismem.encoders.options import batch_size_for_memory, resolve_device, resolve_plan
from vismem.encoders.runtime import planned_runtime, verification_batch
from vismem.errors import InvalidInputError

from conftest import json_lines


def test_auto_device_prefers_cuda_then_mps_then_cpu():
    assert resolve_device("auto", cuda_devices=2, mps=True) == "cuda:0"
    assert resolve_device("auto", cuda_devices=0, mps=True) == "mps"
    assert resolve_device("auto", cuda_devices=0, mps=False) == "cpu"
    assert resolve_device("cuda", cuda_devices=2, mps=False) == "cuda:0"
    assert resolve_device("cuda:1", cuda_devices=2, mps=False) == "cuda:1"
    assert resolve_device("cpu", cuda_devices=2, mps=True) == "cpu"


@pytest.mark.parametrize("device, cuda, mps, message", [
    ("cuda", 0, False, "no CUDA GPU is visible"),
    ("cuda:2", 2, False, "only 2 CUDA GPU"),
    ("mps", 1, False, "no Apple GPU"),
])
def test_absent_device_is_an_error_that_names_the_fix(device, cuda, mps, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        resolve_device(device, cuda_devices=cuda, mps=mps)
    assert "--device auto or cpu" in str(info.value)


def test_plan_half_on_cuda_onnx_on_cpu_and_refusals():
    plan = lambda **kw: resolve_plan(EncoderOptions(**kw), cuda_devices=1, mps=False, onnx_installed=True)  # noqa: E731
    assert plan() == plan(device="cuda")
    assert (plan().device, plan().runtime, plan().precision) == ("cuda:0", "torch", "fp16")
    assert (plan(precision="fp32").runtime, plan(precision="fp32").precision) == ("torch", "fp32")
    cpu = plan(device="cpu")
    assert (cpu.runtime, cpu.precision) == ("onnx", "fp32")
    assert plan(device="cpu", precision="bf16").runtime == "torch"  # ONNX Runtime is fp32 only
    assert plan(device="cpu", runtime="torch").runtime == "torch"
    without = resolve_plan(EncoderOptions(device="cpu"), cuda_devices=0, mps=False, onnx_installed=False)
    assert without.runtime == "torch"
    with pytest.raises(InvalidInputError, match="runs on the CPU"):
        plan(device="cuda", runtime="onnx")
    with pytest.raises(InvalidInputError, match="runs in fp32"):
        plan(device="cpu", runtime="onnx", precision="fp16")
    with pytest.raises(InvalidInputError, match="pip install onnxruntime"):
        resolve_plan(EncoderOptions(runtime="onnx"), cuda_devices=0, mps=False, onnx_installed=False)


def test_device_comes_from_the_environment_unless_given(monkeypatch):
    monkeypatch.setenv("VISMEM_DEVICE", "cpu")
    assert EncoderOptions().with_env().device == "cpu"
    assert EncoderOptions(device="cuda:1").with_env().device == "cuda:1"
    monkeypatch.setenv("VISMEM_DEVICE", "tpu")
    with pytest.raises(InvalidInputError, match="unknown device 'tpu'"):
        EncoderOptions().with_env()


def test_bad_options_fail_up_front(cli):
    for bad in ({"device": "gpu"}, {"runtime": "tensorrt"}, {"precision": "int8"},
                {"batch_size": 0}, {"decode_workers": -1}):
        with pytest.raises(InvalidInputError):
            EncoderOptions(**bad)
    # 10,000 decoding processes were started one by one until the machine ran out
    with pytest.raises(InvalidInputError, match="decode_workers must be an integer from 0 to 64, got 65"):
        EncoderOptions(decode_workers=65)
    assert EncoderOptions(decode_workers=64).decode_workers == 64
    refused = cli("classify", "no-memory", "x.png", "--decode-workers", "10000")
    assert refused.returncode == 2 and "10000 is not from 0 to 64" in refused.stderr


def test_batch_size_fits_half_the_free_memory():
    gib = 2**30
    assert batch_size_for_memory(8 * gib, 20 * 2**20) == 128  # 4 GiB / 20 MiB = 204 -> 128
    assert batch_size_for_memory(80 * gib, 20 * 2**20) == 1024  # capped
    assert batch_size_for_memory(100 * 2**20, 20 * 2**20) == 8  # floor
    assert batch_size_for_memory(gib, 0) == 1024


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine with no GPU")
def test_asking_for_a_gpu_here_fails_clearly():
    with pytest.raises(InvalidInputError, match="no CUDA GPU is visible"):
        create_encoder("efficientnet_lite0", options=EncoderOptions(device="cuda"))


def half_precision_cases():
    cases = [("cpu", "fp16")]  # the CUDA default precision, through CPU autocast
    if torch.cuda.is_available():
        cases.append(("cuda", "fp16"))
    return cases


@pytest.fixture(scope="module")
def fp32_lite0():
    return create_encoder("efficientnet_lite0", options=EncoderOptions(runtime="torch", precision="fp32"))


@pytest.mark.parametrize("device, precision", half_precision_cases())
def test_half_precision_agrees_with_fp32(fp32_lite0, digits, device, precision):
    """Half precision keeps cosine >= 0.999 to fp32 on every test image, and the same
    nearest neighbour in a digits memory (except between neighbours tied to within 0.001,
    which half's rounding may order either way). Half runs through CPU autocast here at
    ~0.3 s an image, so the check keeps to 60 images."""
    half = create_encoder("efficientnet_lite0",
                          options=EncoderOptions(device=device, runtime="torch", precision=precision))
    assert half.runtime.precision == precision and half.runtime.notes == ()
    assert half.id == fp32_lite0.id  # precision and device are not identity
    photos = [Image.fromarray(getattr(data, name)()) for name in ("chelsea", "coffee", "astronaut", "rocket")]
    images, labels = digits
    queries = photos + images[:16]
    a, b = fp32_lite0.encode(queries), half.encode(queries)
    assert np.min(np.sum(a * b, axis=1)) >= 0.999
    stored = images[16:56]
    keys_a, keys_b = fp32_lite0.encode(stored), half.encode(stored)
    sims_a, sims_b = a[4:] @ keys_a.T, b[4:] @ keys_b.T
    top2 = np.sort(sims_a, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 1e-3  # a tie closer than that is within half's rounding
    assert decided.mean() >= 0.9
    assert (sims_a.argmax(axis=1) == sims_b.argmax(axis=1))[decided].all()


def test_a_half_precision_that_disagrees_is_refused(fp32_lite0, digits):
    """bf16 keeps only 8 mantissa bits: on EfficientNet-Lite0 its vectors fall below
    cosine 0.999 to fp32, so the check refuses it and the encoder runs fp32, saying so."""
    with pytest.warns(EncoderFallbackWarning, match="bf16 refused on cpu"):
        refused = create_encoder("efficientnet_lite0",
                                 options=EncoderOptions(device="cpu", runtime="torch", precision="bf16"))
    assert refused.runtime.precision == "fp32" and "bf16 refused" in refused.runtime.notes[0]
    images = digits[0][:8]
    np.testing.assert_allclose(refused.encode(images), fp32_lite0.encode(images), atol=1e-5)


def test_planned_runtime_needs_no_model():
    assert planned_runtime(None) is None
    assert planned_runtime("pixels").runtime == "numpy"
    plan = planned_runtime("resnet50", EncoderOptions(device="cpu", runtime="torch", decode_workers=2))
    assert (plan.device, plan.runtime, plan.precision, plan.decode_workers) == ("cpu", "torch", "fp32", 2)


def test_verification_batch_is_fixed():
    from vismem.encoders import Preprocessing

    prep = Preprocessing(64, 72)
    first, again = verification_batch(prep), verification_batch(prep)
    assert first.shape == (4, 64, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again) and first.std() > 20


def test_memory_takes_options_without_changing_identity(digit_folders, tmp_path):
    train, _ = digit_folders
    options = EncoderOptions(device="cpu", runtime="torch", batch_size=7, decode_workers=0)
    with Memory.create(tmp_path / "m", encoder="efficientnet_lite0", encoder_options=options) as memory:
        assert memory.encoder.batch_size == 7 and memory.encoder.runtime.runtime == "torch"
        encoder_id = memory.encoder.id
    with Memory.open(tmp_path / "m", encoder_options=EncoderOptions(device="cpu", runtime="onnx")) as memory:
        assert memory.encoder.runtime.runtime == "onnx" and memory.encoder.id == encoder_id


def test_cli_options_reach_the_encoder_and_are_announced(cli, digit_folders, tmp_path, monkeypatch):
    train, test = digit_folders
    mem = tmp_path / "m"
    cli("create", mem, "--encoder", "efficientnet_lite0", "--runtime", "torch", check=True)
    # (--device cpu: on a machine with a GPU, auto picks it, and fp16)
    added = cli("add", mem, train, "--device", "cpu", "--runtime", "torch", "--decode-workers", "2",
                "--batch-size", "16", "--json", check=True)
    assert json_lines(added)[-1]["added"] == 80
    assert "adding (torch fp32 on cpu, decode workers 2, batch 16)" in added.stderr  # the progress bar
    result = cli("eval", mem, test, "--device", "cpu", "--runtime", "onnx", "--json", check=True)
    assert "evaluating (onnx fp32 on cpu, decode workers auto, batch 32)" in result.stderr
    info = json_lines(cli("info", mem, "--json", check=True))[0]
    assert info["encoding"]["runtime"] == "onnx" and info["encoding"]["device"] == "cpu"
    if not torch.cuda.is_available():
        query = next(iter(sorted(test.rglob("*.png"))))
        refused = cli("classify", mem, query, "--device", "cuda")
        assert refused.returncode == 1 and "no CUDA GPU is visible" in refused.stderr
        monkeypatch.setenv("VISMEM_DEVICE", "cuda")
        refused = cli("classify", mem, query)
        assert refused.returncode == 1 and "no CUDA GPU is visible" in refused.stderr
        monkeypatch.delenv("VISMEM_DEVICE")
    bad = cli("add", mem, train, "--runtime", "tensorrt")
    assert bad.returncode == 2 and "unknown runtime" in bad.stderr  # a value --runtime cannot take: bad usage


def test_an_option_value_that_cannot_be_is_bad_usage(cli, tmp_path, monkeypatch):
    """`--device gpu`, `--runtime tensorrt`, `--precision int8` exited 1 ("error, nothing
    changed") where every other value an option cannot take is bad usage, exit 2."""
    for option, value, words in (("--device", "gpu", "unknown device 'gpu'"),
                                 ("--runtime", "tensorrt", "unknown runtime 'tensorrt'"),
                                 ("--precision", "int8", "unknown precision 'int8'")):
        refused = cli("create", tmp_path / "m", "--encoder", "pixels", option, value)
        assert refused.returncode == 2 and words in refused.stderr, (option, refused.stderr)
        refused = cli("classify", tmp_path / "no-memory", "x.png", option, value)
        assert refused.returncode == 2 and words in refused.stderr, (option, refused.stderr)
    monkeypatch.setenv("VISMEM_DEVICE", "tpu")  # the option's environment variable: the same check
    refused = cli("create", tmp_path / "m", "--encoder", "pixels")
    assert refused.returncode == 2 and "unknown device 'tpu'" in refused.stderr
    assert not (tmp_path / "m").exists()


def add_is_refused(cli, tmp_path, *options: str, says: str) -> None:
    """`vismem add` of one image to the memory at tmp_path/m with `options` exits 1 saying
    `says`, and adds nothing."""
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(image)
    refused = cli("add", tmp_path / "m", image, "--label", "a", *options)
    assert refused.returncode == 1 and says in refused.stderr
    with Memory.open(tmp_path / "m") as memory:
        assert len(memory) == 0


def test_a_runtime_the_pixels_encoder_has_none_of_is_refused(cli, tmp_path):
    """The pixels encoder refused --runtime onnx but took --runtime torch, and ran in numpy,
    without a word. Either is refused now, before anything is made, as --device cuda is."""
    for runtime, words in (("torch", "encoder pixels has no model to run on torch: drop --runtime torch"),
                           ("onnx", "encoder pixels has no model to run on ONNX Runtime: drop --runtime onnx")):
        with pytest.raises(InvalidInputError, match=words):
            create_encoder("pixels", options=EncoderOptions(runtime=runtime))
        refused = cli("create", tmp_path / runtime, "--encoder", "pixels", "--runtime", runtime)
        assert refused.returncode == 1 and refused.stderr == f"error: {words}\n"
        assert not (tmp_path / runtime).exists()
    assert create_encoder("pixels", options=EncoderOptions(runtime="auto")).runtime.runtime == "numpy"
    cli("create", tmp_path / "m", "--encoder", "pixels", check=True)
    add_is_refused(cli, tmp_path, "--runtime", "torch", says="drop --runtime torch")


def test_a_device_or_precision_an_encoder_cannot_run_on_is_refused(cli, tmp_path, monkeypatch):
    """The pixels encoder took --device cuda and --precision fp16 and ran in numpy on the CPU
    in fp32 without a word. Refused now before anything is made, as --runtime onnx for it is
    (exit 1), naming the encoder and what it runs on; VISMEM_DEVICE, a machine's default for
    models, is not refused for an encoder without one."""
    for options, words in ((EncoderOptions(device="cuda"), "encoder pixels runs on cpu only, not cuda"),
                           (EncoderOptions(device="mps"), "encoder pixels runs on cpu only, not mps"),
                           (EncoderOptions(precision="fp16"), "encoder pixels runs in fp32 only, not fp16")):
        with pytest.raises(InvalidInputError, match=words):
            create_encoder("pixels", options=options)
    assert create_encoder("pixels", options=EncoderOptions(device="cpu", precision="fp32")).runtime.device == "cpu"
    monkeypatch.setenv("VISMEM_DEVICE", "cuda")
    assert create_encoder("pixels").runtime.device == "cpu"
    created = cli("create", tmp_path / "m", "--encoder", "pixels")  # VISMEM_DEVICE=cuda
    assert created.returncode == 0, created.stderr
    monkeypatch.delenv("VISMEM_DEVICE")
    refused = cli("create", tmp_path / "other", "--encoder", "pixels", "--device", "cuda")
    assert refused.returncode == 1 and "encoder pixels runs on cpu only, not cuda: drop --device cuda" in refused.stderr
    assert not (tmp_path / "other").exists()
    add_is_refused(cli, tmp_path, "--precision", "fp16", says="runs in fp32 only, not fp16: drop --precision fp16")
