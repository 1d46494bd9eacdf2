"""The alternating optimization end to end on tiny data: learning, devices, checkpoint and resume."""

import signal
import dataclasses
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import easy_two_class_data, method_config, train_config

from dsah.config import DEEP_METHODS
from dsah.device import select_device
from dsah.errors import DataError
from dsah.methods import build_network, deep_method
from dsah.nets.spec import NetworkSpec
from dsah.training.encode import encode
from dsah.evaluation.metrics import mean_average_precision
from dsah.training.augment import augment
from dsah.training.loop import train

WORKER = Path(__file__).with_name("train_worker.py")


@pytest.mark.parametrize("method", DEEP_METHODS)
def test_tiny_run_separates_two_easy_classes(method):
    data, (query_images, query_labels) = easy_two_class_data()
    config = train_config(width=8, outer_iters=4, samples=128, epochs=2, batch=32, lr=0.01, eval_every=2)
    settings = method_config("dsah", eta=0.5, mu=0.2, lam=0.5) if method == "dsah" else method_config(method)
    labels = data.labels.numpy()
    if method != "dsah":  # only DSAH reads the label auto-encoder
        data.label_codes = data.decoder = None
    result = train(data, 8, config, method, 0, settings, progress=False)
    queries = encode(result.model, query_images, torch.device("cpu")).numpy()
    score = mean_average_precision(queries, result.codes.numpy(), query_labels, labels)
    assert score >= 0.9, score  # chance is 0.5
    assert [row["iteration"] for row in result.history] == [1, 2, 3, 4]
    assert "val_mAP" in result.history[1] and "val_mAP" not in result.history[0]
    assert ("semantic" in result.history[0]) == (method == "dsah")
    assert ("triplet" in result.history[0]) == (method == "dnnh")
    assert result.codes.shape == (len(labels), 8) and set(result.codes.unique().tolist()) <= {-1.0, 1.0}
    assert result.metrics["device"] == "cpu" and result.metrics["train_seconds"] > 0


def test_dsah_from_zero_codes_adds_its_semantic_terms_once_the_first_update_set_them():
    """With B at zeros the pairwise term has no gradient to scale eta and mu against: the first outer
    iteration trains without them, the scales are measured on the first batch after the first update."""
    data, (query_images, query_labels) = easy_two_class_data()
    config = train_config(width=8, outer_iters=3, samples=128, epochs=2, batch=32, lr=0.01, eval_every=0)
    settings = method_config("dsah", eta=0.5, mu=0.2, lam=0.5, init="zeros")
    result = train(data, 8, config, "dsah", 0, settings, progress=False)
    assert "semantic" not in result.history[0] and "decoder" not in result.history[0]
    assert "semantic" in result.history[1] and "decoder" in result.history[1]
    assert result.metrics["semantic_scale"] > 0 and result.metrics["decoder_scale"] > 0
    assert set(result.codes.unique().tolist()) == {-1.0, 1.0}
    queries = encode(result.model, query_images, torch.device("cpu")).numpy()
    assert mean_average_precision(queries, result.codes.numpy(), query_labels, data.labels.numpy()) >= 0.9


def test_no_gpu_falls_back_to_cpu_and_says_so():
    messages = []
    device = select_device("cuda", messages.append)
    if torch.cuda.is_available():
        assert device.type == "cuda"
    else:
        assert device.type == "cpu" and "no GPU available" in messages[0]
    assert select_device("cpu", messages.append).type == "cpu"


def test_augment_crops_and_flips_within_the_image():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).reshape(2, 3, 8, 8)
    out = augment(images, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
    same = augment(images, torch.Generator().manual_seed(0), pad=0)
    # Without padding only flips remain: each image is itself or its mirror.
    for original, seen in zip(images.float(), same):
        assert torch.equal(seen, original) or torch.equal(seen, original.flip(-1))


def test_from_64_px_augment_is_a_random_resized_crop_with_flips():
    """Each image: a crop of 25-100% of its area, resized back, mirrored half the time; drawn per image."""
    ramp = torch.arange(64, dtype=torch.float32).expand(3, 64, 64)  # column index as the pixel value
    images = ramp.expand(32, 3, 64, 64).to(torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == (32, 3, 64, 64) and out.dtype == torch.float32
    rows = out[:, 0, 32]  # each output row: a stretched piece of the ramp, rising or (mirrored) falling
    rising = rows[:, -1] > rows[:, 0]
    assert 0 < int(rising.sum()) < 32  # some flipped, some not
    spans = (rows[:, -1] - rows[:, 0]).abs()
    assert spans.min() >= 0.25 ** 0.5 * 0.75 ** 0.5 * 63 - 2 and spans.max() <= 63  # widths within the drawn range
    assert len(set(spans.round().tolist())) > 10  # crops differ from image to image
    again = augment(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the generator alone decides: resumable, the same in every process


def run_worker(tmp_path, name):
    out, checkpoint = tmp_path / f"{name}.npy", tmp_path / f"{name}.ckpt"
    return out, checkpoint, [sys.executable, str(WORKER), str(out), str(checkpoint)]


def test_killed_run_resumes_and_ends_with_the_uninterrupted_codes(tmp_path):
    out, _, command = run_worker(tmp_path, "straight")
    subprocess.run(command, check=True, capture_output=True)
    expected = np.load(out)

    out, checkpoint, command = run_worker(tmp_path, "killed")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not out.exists(), "killed after the first checkpoint, before the end"
    done_before = torch.load(checkpoint, weights_only=True)["iteration"]
    assert 1 <= done_before < 6

    resumed = subprocess.run(command, check=True, capture_output=True, text=True)
    assert f"resuming from {checkpoint} after outer iteration {done_before}/6" in resumed.stdout
    assert np.array_equal(np.load(out), expected)


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    out, checkpoint, command = run_worker(tmp_path, "a")
    subprocess.run(command, check=True, capture_output=True)
    state = torch.load(checkpoint, weights_only=True)
    state["fingerprint"] = "something else"
    torch.save(state, checkpoint)
    rerun = subprocess.run(command, check=True, capture_output=True, text=True)
    assert "belongs to another configuration: starting afresh" in rerun.stdout


def test_checkpoint_written_by_other_code_is_not_resumed(tmp_path):
    """The checkpoint carries the digests of the code that wrote it: after a code change the run starts
    afresh, says which files changed, and ends as an uninterrupted run of the new code does."""
    data, _ = easy_two_class_data()
    config = train_config(width=8, outer_iters=3, samples=96, epochs=1, batch=32, lr=0.01, eval_every=0)
    settings, checkpoint = method_config("dsah"), tmp_path / "train.pt"
    old_code, new_code = {"dsah/training/loop.py": "1", "stages/train.py": "1"}, {"dsah/training/loop.py": "2", "stages/train.py": "1"}

    def run(code):
        messages = []
        result = train(data, 8, config, "dsah", 0, settings, checkpoint=checkpoint, code=code, progress=False,
                       log=messages.append)
        return result, messages

    first, _ = run(old_code)  # train() leaves its last checkpoint (the stage removes it when done)
    assert torch.load(checkpoint, weights_only=True)["code"] == old_code
    same, messages = run(old_code)
    assert any("resuming from" in m and "after outer iteration 3/3" in m for m in messages)
    changed, messages = run(new_code)
    assert any(f"checkpoint {checkpoint} was written by other code (changed since: dsah/training/loop.py): starting afresh"
               in m for m in messages), messages
    assert [row["iteration"] for row in changed.history] == [1, 2, 3]
    assert torch.equal(changed.codes, first.codes) and torch.equal(same.codes, first.codes)
    assert torch.load(checkpoint, weights_only=True)["code"] == new_code


def test_every_outer_iteration_reaches_the_logger_and_a_resume_replays_the_checkpoints_rows(tmp_path):
    """on_iteration sees each history row as it is made; a resumed run hands it the checkpoint's rows
    first, so a logger that starts empty (DVCLive clears its folder) ends with the whole history."""
    data, _ = easy_two_class_data()
    config = train_config(width=8, outer_iters=3, samples=64, epochs=1, batch=32, lr=0.01, eval_every=1)
    checkpoint, seen = tmp_path / "train.pt", []
    first = train(data, 8, config, "adsh", 0, method_config("adsh"), checkpoint=checkpoint, progress=False,
                  on_iteration=seen.append)
    assert seen == first.history and [row["iteration"] for row in seen] == [1, 2, 3]
    assert all("pairwise" in row and "val_mAP" in row for row in seen)

    state = torch.load(checkpoint, weights_only=True)  # as if killed after the second outer iteration
    state["iteration"], state["history"] = 2, state["history"][:2]
    torch.save(state, checkpoint)
    replayed = []
    resumed = train(data, 8, config, "adsh", 0, method_config("adsh"), checkpoint=checkpoint, progress=False,
                    on_iteration=replayed.append)
    assert [row["iteration"] for row in replayed] == [1, 2, 3] and replayed == resumed.history


def test_the_trunk_learns_at_its_share_of_the_rate_and_keeps_it_on_resume(tmp_path):
    """train_imgnet.trunk_lr scales the backbone's learning rate against the hash layer's: at 0 the trunk
    stays as initialised while the head learns, and a resumed run keeps the share (the optimizer's groups
    carry it in the checkpoint)."""
    data, _ = easy_two_class_data()
    config = train_config(width=8, outer_iters=2, samples=64, epochs=1, batch=32, lr=0.01, eval_every=0,
                          trunk_lr=0.0, weight_decay=0.0)
    torch.manual_seed(0)

    initial = build_network(deep_method("adsh", method_config("adsh"), 8), NetworkSpec("cifar_resnet", 8, "", 0, False), 8)
    checkpoint = tmp_path / "train.pt"
    result = train(data, 8, config, "adsh", 0, method_config("adsh"), checkpoint=checkpoint, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(result.model.backbone.state_dict().values(),
                                                 initial.backbone.state_dict().values()) if a.is_floating_point()
               and a.dim() > 1)  # conv weights: untouched (BatchNorm statistics still follow the data)
    assert not torch.equal(result.model.head.hash_layer.weight, initial.head.hash_layer.weight)
    groups = torch.load(checkpoint, weights_only=True)["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [0.0, 1.0] and groups[0]["lr"] == 0.0 < groups[1]["lr"]

    state = torch.load(checkpoint, weights_only=True)  # as if killed after the first outer iteration
    state["iteration"], state["history"] = 1, state["history"][:1]
    torch.save(state, checkpoint)
    resumed = train(data, 8, config, "adsh", 0, method_config("adsh"), checkpoint=checkpoint, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.backbone.state_dict().values(),
                                                 initial.backbone.state_dict().values()) if a.is_floating_point()
               and a.dim() > 1)


def test_test_flips_encode_the_sign_of_the_mean_outputs_of_an_image_and_its_mirror():
    torch.manual_seed(0)
    from dsah.nets.backbones import ImgNet, build_backbone

    flipping = NetworkSpec("cifar_resnet", 8, "", 0, test_flips=True)
    model = ImgNet(build_backbone("cifar_resnet", 8, ""), 16, spec=flipping).eval()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    x = images.float() / 255
    with torch.no_grad():
        mean = (model(x) + model(x.flip(-1))) / 2
        plain = model(x)
    assert torch.equal(encode(model, images, torch.device("cpu")), torch.where(mean >= 0, 1.0, -1.0))
    model.spec = dataclasses.replace(flipping, test_flips=False)
    assert torch.equal(encode(model, images, torch.device("cpu")), torch.where(plain >= 0, 1.0, -1.0))
    assert not torch.equal(torch.where(mean >= 0, 1.0, -1.0), torch.where(plain >= 0, 1.0, -1.0))  # it matters


def test_a_run_with_test_flips_validates_with_them_and_its_model_file_keeps_them(tmp_path):
    from dsah.search.model import load_model

    data, (query_images, _) = easy_two_class_data()
    config = train_config(width=8, outer_iters=1, samples=64, epochs=1, batch=32, test_flips=True,
                          backbone="cifar_whitened")
    data.label_codes = data.decoder = None
    result = train(data, 8, config, "adsh", 0, method_config("adsh"), progress=False)
    assert result.model.spec == NetworkSpec.from_config(config) and result.model.spec.test_flips
    saved = {"kind": "network", "method": "adsh", "bits": 8, "settings": asdict(method_config("adsh")),
             "state_dict": result.model.state_dict()}
    # As the train stage writes it now (the spec), and as it wrote it before the spec (the training config).
    torch.save({**saved, "network": result.model.spec.to_dict(), "config": asdict(config)}, tmp_path / "model.pt")
    torch.save({**saved, "config": asdict(config)}, tmp_path / "before.pt")
    for path in (tmp_path / "model.pt", tmp_path / "before.pt"):
        loaded, _ = load_model(path)
        assert loaded.spec == result.model.spec
        assert torch.equal(encode(loaded, query_images, torch.device("cpu")),
                           encode(result.model, query_images, torch.device("cpu")))


def test_a_model_file_that_cannot_be_read_back_is_refused_saying_why(tmp_path):
    from dsah.search.model import load_model

    spec = NetworkSpec("cifar_resnet", 8, "", 0, False)
    network = build_network(deep_method("adsh", method_config("adsh"), 8), spec, 8)
    saved = {"kind": "network", "method": "adsh", "bits": 8, "settings": asdict(method_config("adsh"))}
    cases = {
        "no network description in it": {**saved, "state_dict": network.state_dict()},
        r"its network description has \['backbone', 'width'\]": {**saved, "network": {"backbone": "cifar_resnet", "width": 8},
                                                                "state_dict": network.state_dict()},
        "its weights do not fit the network it describes": {**saved, "network": {**spec.to_dict(), "width": 16},
                                                             "state_dict": network.state_dict()},
    }
    for message, state in cases.items():
        torch.save(state, tmp_path / "model.pt")
        with pytest.raises(DataError, match=message):
            load_model(tmp_path / "model.pt")


def test_an_unknown_optimizer_is_a_clear_error():
    from dsah.errors import ConfigError

    with pytest.raises(ConfigError, match="train_imgnet.optimizer: 'rmsprop' is unknown; allowed: one of adam, sgd"):
        train_config(optimizer="rmsprop")
