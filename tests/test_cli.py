"""The CLI contract other tools script against, on real images: in this process (`cli`),
and in real subprocesses where the process boundary is the point (`cli_process`)."""

import pytest
from conftest import json_lines
from PIL import Image
from skimage import data
from test_images import write_bad_files


@pytest.fixture(scope="module")
def built_memory(tmp_path_factory, digit_folders):
    """A real efficientnet_lite0 memory of digits, filled through the CLI in a real process:
    every stdout line of `add --json` must parse as JSON while its progress bar runs. (It is
    created in this process, where torch is already imported: 0.3 s, not 4 s.)"""
    from conftest import run_cli, run_cli_here

    memdir = tmp_path_factory.mktemp("cli") / "mem"
    train, _ = digit_folders
    run_cli_here("create", memdir, "--encoder", "efficientnet_lite0", check=True)
    added = run_cli("add", memdir, train, "--json", check=True)
    return memdir, json_lines(added)


def test_add_reports_batches_and_summary(built_memory, digit_folders):
    _, lines = built_memory
    assert all(line["event"] == "committed" for line in lines[:-1])
    done = lines[-1]
    assert done["event"] == "done" and done["added"] == 80 and done["skipped"] == 0
    assert sorted(i for line in lines[:-1] for i in line["ids"]) == sorted(done["ids"])
    assert done["items"] == 80


def test_json_lines_stay_on_stdout_while_a_bar_is_drawn_on_a_terminal(tmp_path, digit_folders):
    # `vismem add photos/ --json > events.jsonl` in a shell: stderr is the terminal, where
    # the bar moves; every event written meanwhile must still reach stdout
    import sys

    from conftest import on_terminal, run_cli_here

    memdir = tmp_path / "mem"
    run_cli_here("create", memdir, "--encoder", "pixels", check=True)
    added, shown = on_terminal([sys.executable, "-m", "vismem", "add", str(memdir), str(digit_folders[0]), "--json"])
    lines = json_lines(added)
    assert added.returncode == 0 and b"adding" in shown  # the bar was drawn on the terminal
    assert [line["event"] for line in lines] == ["committed"] * (len(lines) - 1) + ["done"] and len(lines) > 1
    assert sorted(i for line in lines[:-1] for i in line["ids"]) == sorted(lines[-1]["ids"])
    assert b"committed" not in shown


def test_a_bar_keeps_its_numbers_whole_and_a_log_gets_the_whole_line(tmp_path, digit_folders):
    """On a narrow terminal the bar's description gives way (an ellipsis), not its count or
    times, and no drawn line is wider than the terminal; where stderr is a file or a pipe,
    the one line written at the end is whole, however narrow the console thinks it is."""
    import os
    import re
    import sys

    from conftest import on_terminal, run_cli, run_cli_here

    memdir = tmp_path / "mem"
    run_cli_here("create", memdir, "--encoder", "pixels", check=True)
    n = len(list(digit_folders[0].rglob("*.png")))
    added, shown = on_terminal([sys.executable, "-m", "vismem", "add", str(memdir), str(digit_folders[0])],
                               columns=60)
    assert added.returncode == 0
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode())
    frames = [frame for frame in re.split(r"[\r\n]", drawn) if "adding" in frame]
    assert frames and all(len(frame) <= 60 for frame in frames)
    assert f"{n}/{n}" in frames[-1] and "…" in frames[-1] and re.search(r"\d+:\d\d:\d\d", frames[-1])
    logged = run_cli("add", memdir, digit_folders[0], "--allow-duplicates",
                     env={**os.environ, "COLUMNS": "40"}, check=True)
    line = next(line for line in logged.stderr.splitlines() if line.startswith("adding"))
    assert re.fullmatch(rf"adding \(.+, batch \d+\) {n}/{n} \d+:\d\d:\d\d", line)


def test_info_json(built_memory, cli):
    memdir, _ = built_memory
    info = json_lines(cli("info", memdir, "--json", check=True))[0]
    assert info["items"] == 80 and info["dim"] == 1280
    assert info["classes"] == {str(d): 8 for d in range(10)}
    assert info["encoder"] == "efficientnet_lite0" and info["format_version"] == 3
    assert info["index"]["type"] == "exact" and info["disk_bytes"] > 0
    human = cli("info", memdir, check=True).stdout
    assert "80 in 10 classes" in human and "efficientnet_lite0" in human and "1 prototype per class" in human


def test_classify_json_fields(built_memory, cli, digit_folders):
    memdir, _ = built_memory
    _, test = digit_folders
    images = sorted(test.rglob("*.png"))[:4]
    result = cli("classify", memdir, *images, "--k", "5", "--vote", "softmax", "--json", check=True)
    decisions = json_lines(result)
    assert [d["path"] for d in decisions] == [str(p) for p in images]
    for d in decisions:
        assert d["label"] in d["scores"] and 0 < d["confidence"] <= 1
        assert d["confidence"] == pytest.approx(max(d["scores"].values()))
        assert len(d["neighbors"]) == 5
        distances = [n["distance"] for n in d["neighbors"]]
        assert distances == sorted(distances)
        assert set(d["neighbors"][0]) >= {"id", "label", "distance", "weight", "source"}


def test_eval_accuracy_on_a_test_folder(built_memory, cli, digit_folders):
    memdir, _ = built_memory
    report = json_lines(cli("eval", memdir, digit_folders[1], "--json", check=True))[0]
    assert report["total"] == 30
    assert report["accuracy"] > 0.6  # ImageNet features on 8x8 digits, 8 exemplars per class
    assert set(report["per_class"]) == {str(d) for d in range(10)}
    # eval takes the vote options classify takes, --mix included, and reports them
    hybrid = json_lines(cli("eval", memdir, digit_folders[1], "--vote", "hybrid", "--mix", "0.25", "--json",
                            check=True))[0]
    assert (hybrid["vote"], hybrid["mix"], hybrid["total"]) == ("hybrid", 0.25, 30) and "alpha" in hybrid


def test_eval_warns_when_test_images_are_items_of_the_memory(tmp_path, cli):
    """`eval` on images the memory holds said nothing (where `tune-index` warns of query
    images it holds): each finds itself, so the accuracy flatters. They are still scored,
    on their stored vectors, and named: a warning on stderr, `in_memory` and
    `in_memory_items` in --json."""
    import shutil

    colours = {"red": [(200, 10, 10), (180, 30, 20)], "green": [(10, 200, 10), (30, 180, 20)]}
    for label, shades in colours.items():
        for n, colour in enumerate(shades):
            (tmp_path / "train" / label).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 20), colour).save(tmp_path / "train" / label / f"{n}.png")
    (tmp_path / "test" / "red").mkdir(parents=True)
    shutil.copy(tmp_path / "train" / "red" / "1.png", tmp_path / "test" / "red" / "seen.png")
    Image.new("RGB", (20, 20), (220, 20, 0)).save(tmp_path / "test" / "red" / "unseen.png")
    cli("create", tmp_path / "mem", "--encoder", "pixels", check=True)
    ids = json_lines(cli("add", tmp_path / "mem", tmp_path / "train", "--json", check=True))[-1]["ids"]
    told = cli("eval", tmp_path / "mem", tmp_path / "test", check=True)
    assert "accuracy 100.00% on 2 images" in told.stdout
    assert "warning: the memory already holds 1 of the 2 test images (the same content): each finds itself" \
        in told.stderr
    report = json_lines(cli("eval", tmp_path / "mem", tmp_path / "test", "--json", check=True))[0]
    assert report["total"] == 2 and report["in_memory"] == 1
    held = ids[-1]  # red/1.png: classes and files are added in name order
    assert report["in_memory_items"] == [{"path": str(tmp_path / "test" / "red" / "seen.png"), "id": held}]
    (tmp_path / "test" / "red" / "seen.png").unlink()
    unseen = cli("eval", tmp_path / "mem", tmp_path / "test", "--json", check=True)
    assert json_lines(unseen)[0]["in_memory"] == 0 and "already holds" not in unseen.stderr


def test_adding_the_same_folder_again_skips_duplicates_without_encoding(built_memory, cli, digit_folders):
    memdir, _ = built_memory
    done = json_lines(cli("add", memdir, digit_folders[0], "--json", check=True))[-1]
    assert done["added"] == 0 and done["skipped"] == 80
    assert all(s["reason"].startswith("duplicate of item") for s in done["skipped_items"])


def test_bad_files_are_skipped_with_reasons_and_exit_3(tmp_path, cli):
    memdir = tmp_path / "mem"
    folder = tmp_path / "in"
    expected = write_bad_files(folder)
    cli("create", memdir, "--encoder", "pixels", check=True)
    result = cli("add", memdir, folder, "--label", "stuff", "--json")
    assert result.returncode == 3, result.stderr
    done = json_lines(result)[-1]
    assert done["added"] == 1
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in done["skipped_items"]}
    for name, reason in expected.items():
        assert reason in reasons[name]


def test_remove_by_id_label_and_source(tmp_path, cli):
    memdir = tmp_path / "mem"
    folder = tmp_path / "photos"
    for label, photo in (("cat", data.chelsea()), ("cup", data.coffee()), ("rocket", data.rocket())):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(photo).rotate(i * 5).save(folder / label / f"{i}.png")
    cli("create", memdir, "--encoder", "pixels", check=True)
    cli("add", memdir, folder / "cat", "--label", "cat", "--source", "shelter", check=True)
    cli("add", memdir, folder, check=True)
    info = json_lines(cli("info", memdir, "--json"))[0]
    assert info["classes"] == {"cat": 3, "cup": 3, "rocket": 3}  # cats the second time were duplicates
    removed = json_lines(cli("remove", memdir, "--source", "shelter", "--json", check=True))[0]
    assert removed["removed"] == 3
    first_cup = json_lines(cli("classify", memdir, folder / "cup" / "0.png", "--k", "9", "--json"))[0]
    victim = first_cup["neighbors"][0]["id"]
    cli("remove", memdir, "--id", victim, check=True)
    again = json_lines(cli("classify", memdir, folder / "cup" / "0.png", "--k", "9", "--json"))[0]
    assert victim not in [n["id"] for n in again["neighbors"]]
    assert json_lines(cli("remove", memdir, "--label", "rocket", "--json"))[0]["removed"] == 3
    assert json_lines(cli("info", memdir, "--json"))[0]["classes"] == {"cup": 2}
    assert cli("remove", memdir).returncode == 2  # no selector: bad usage


def test_remove_of_a_label_no_item_has_is_an_error_that_names_near_labels(tmp_path, cli):
    """`remove --label typo` removed nothing and exited 0 without a word, where `remove
    --id` of ids none of which exists is an error. A --label, --source or --where that no
    item matches now is too (exit 1, nothing changed), naming the labels near a mistyped one."""
    import numpy as np
    from conftest import unit_vectors

    from vismem import Memory

    memdir = tmp_path / "mem"
    np.save(tmp_path / "v.npy", unit_vectors(3, 4))
    (tmp_path / "l.txt").write_text("cat\ncats\ndog\n")
    cli("create", memdir, "--encoder", "none", "--dim", "4", check=True)
    cli("add-vectors", memdir, "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "l.txt", check=True)
    for selector, message in ((["--label", "Cat"], "no item is labelled 'Cat'; nothing changed (did you mean 'cat' "
                                                   "or 'cats'?)"),
                              (["--label", "typo"], "no item is labelled 'typo'; nothing changed\n"),
                              (["--source", "scans"], "no item has source 'scans'; nothing changed"),
                              (["--where", "camera=nikon"], "no item matches --where camera=nikon; nothing changed")):
        refused = cli("remove", memdir, *selector, "--json")
        assert (refused.returncode, refused.stdout) == (1, ""), selector
        assert f"error: {message}" in refused.stderr
    with Memory.open(memdir) as memory:
        assert memory.class_counts() == {"cat": 1, "cats": 1, "dog": 1}
    assert json_lines(cli("remove", memdir, "--label", "cat", "--json", check=True))[0]["removed"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (("info", "{tmp}/nowhere"), "no memory at"),
        (("create", "{tmp}/m", "--encoder", "alexnet-9000"), "unknown encoder"),
        (("create", "{tmp}/m", "--encoder", "resnet50"), "--weights FILE"),
        (("create", "{tmp}/m", "--encoder", "none"), "--dim"),
        (("classify", "{tmp}/empty", "{img}"), "is empty"),
        (("add", "{tmp}/empty", "{tmp}/missing-folder"), "no such file"),
    ],
)
def test_errors_are_one_line_with_exit_1(tmp_path, cli, cli_process, args, message):
    img = tmp_path / "q.png"
    Image.fromarray(data.coffee()).save(img)
    cli("create", tmp_path / "empty", "--encoder", "pixels", check=True)
    # the failing command in a real process: exit codes and stderr as a calling script sees them
    result = cli_process(*[a.format(tmp=tmp_path, img=img) for a in args])
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_usage_errors_exit_2(cli_process):
    cli = cli_process
    assert cli("classify").returncode == 2


@pytest.mark.parametrize("args, says", [
    (("classify", "{mem}", "{img}", "--vote", "majority"), "'--vote': 'majority' is not one of rank|"),
    (("classify", "{mem}", "{img}", "--alpha", "0"), "'--alpha': 0.0 is not above 0"),
    # inf passed the open lower bound and failed (exit 1) only once the memory was open
    (("classify", "{mem}", "{img}", "--alpha", "inf"), "'--alpha': inf is not a finite number"),
    (("eval", "{mem}", "{tmp}", "--tau", "inf"), "'--tau': inf is not a finite number"),
    (("explain", "{mem}", "{img}", "--tau", "nan"), "'--tau': nan is not a finite number"),
    # and --c inf was saved: every vote then counted 0
    (("prune", "{mem}", "--mode", "soft", "--c", "inf"), "'--c': inf is not a finite number"),
    (("create", "{tmp}/other", "--target-recall", "nan"), "'--target-recall'"),
    (("search", "{mem}", "{img}", "--where", "camera"), "'--where': takes KEY=VALUE, got 'camera'"),
    (("add", "{mem}", "{img}", "--meta", "=phone"), "'--meta': takes KEY=VALUE, got '=phone'"),
    # 100,000,000-d was accepted (400 MB a vector)
    (("create", "{tmp}/other", "--encoder", "none", "--dim", "100000000"),
     "'--dim': 100000000 is not from 1 to 65,536"),
    (("create", "{tmp}/other", "--encoder", "none", "--dim", "0"), "'--dim': 0 is not from 1 to 65,536"),
    (("create", "{tmp}/other", "--encoder", "none", "--dim", "5.5"), "'--dim': '5.5' is not a whole number"),
    # saved without a word, though only HNSW stores float16 vectors
    (("create", "{tmp}/other", "-e", "none", "--dim", "4", "--index", "exact", "--float16"),
     "'--float16': applies to the hnsw index only"),
    (("create", "{tmp}/other", "-e", "none", "--dim", "4", "--index", "ivfpq", "--float16"),
     "'--float16': applies to the hnsw index only"),
    (("reindex", "{mem}", "--index", "exact", "--float16"), "'--float16': applies to the hnsw index only"),
    (("remove", "{mem}"), "--id / --label / --source / --where: give exactly one of them"),
    (("remove", "{mem}", "--id", "1", "--label", "cat"), "give exactly one of them"),
    (("reindex", "{mem}", "--index", "hnws"), "'--index': 'hnws' is not one of auto|exact|hnsw|ivfpq"),
    (("prune", "{mem}", "--mode", "medium"), "'--mode': 'medium' is not one of off|soft|hard"),
    (("boost", "{mem}", "--id", "1", "--factor", "1e308"), "'--factor': 1e+308 is above 1,000,000"),
    # NaN was told it "should be less than or equal to 1000000": not the reason
    (("boost", "{mem}", "--id", "1", "--factor", "nan"), "'--factor': nan is not a finite number"),
    (("boost", "{mem}", "--id", "1", "--factor", "-inf"), "'--factor': -inf is not a finite number"),
    (("boost", "{mem}", "--id", "1", "--factor", "-1"), "'--factor': -1.0 is not above 0"),
    (("boost", "{mem}", "--id", "1", "--factor", "two"), "'--factor': 'two' is not a number"),
    (("create", "{tmp}/other", "--target-recall", "inf"), "'--target-recall': inf is not a finite number"),
    (("tune", "{mem}", "--held-out", "nan"), "'--held-out': nan is not a finite number"),
    (("calibrate", "{mem}", "--tpr", "nan"), "'--tpr': nan is not a finite number"),
    (("calibrate", "{mem}", "--prototype-weight", "nan"), "'--prototype-weight': nan is not a finite number"),
    (("calibrate", "{mem}", "--prototype-weight", "-1"), "'--prototype-weight': -1.0 is below 0"),
    (("reindex", "{mem}", "--index", "exact", "--target-recall", "nan"),
     "'--target-recall': nan is not a finite number"),
    # an OverflowError traceback
    (("serve", "{mem}", "--max-upload-mb", "inf"), "'--max-upload-mb': inf is not a finite number"),
    (("serve", "{mem}", "--max-upload-mb", "0"), "'--max-upload-mb': 0.0 is not from 0.001 to 1,048,576"),
    (("serve", "{mem}", "--read-timeout", "0"), "'--read-timeout': 0.0 is not above 0"),
    # Typer said "unable to parse string as an integer", naming no fix
    (("remove", "{mem}", "--id", "1,2"), "'1,2' is not an item id (a whole number); give several as --id 1 --id 2"),
    (("block", "{mem}", "--id", "1.5"), "'1.5' is not an item id"),
])
def test_a_value_an_option_cannot_take_is_bad_usage_and_changes_nothing(tmp_path, cli, args, says):
    """Exit 2 with the usage line, as for any malformed option (-k 0, --mix 2): they
    exited 1, the code a script reads as "could not be done", after opening the memory."""
    img = tmp_path / "q.png"
    Image.fromarray(data.coffee()).save(img)
    cli("create", tmp_path / "m", "--encoder", "pixels", check=True)
    cli("add", tmp_path / "m", img, "--label", "cup", check=True)
    result = cli(*[a.format(mem=tmp_path / "m", img=img, tmp=tmp_path) for a in args])
    assert result.returncode == 2 and says in result.stderr and result.stdout == "", result.stderr
    info = json_lines(cli("info", tmp_path / "m", "--json"))[0]
    assert info["classes"] == {"cup": 1} and info["pruning"]["mode"] == "off", info
    assert not (tmp_path / "other").exists()


def test_explain_writes_a_sheet(built_memory, cli, digit_folders, tmp_path):
    memdir, _ = built_memory
    image = sorted(digit_folders[1].rglob("*.png"))[0]
    sheet = tmp_path / "sheet.png"
    out = json_lines(cli("explain", memdir, image, "--out", sheet, "--k", "6", "--json", check=True))[0]
    assert out["sheet"] == str(sheet) and len(out["neighbors"]) == 6
    picture = Image.open(sheet)
    assert picture.width >= 6 * 128  # query + 6 neighbour tiles


def test_add_vectors_from_npy_files(tmp_path, cli):
    import numpy as np
    from conftest import unit_vectors

    memdir = tmp_path / "mem"
    vectors = unit_vectors(20, 12)
    np.save(tmp_path / "v.npy", vectors)
    np.save(tmp_path / "l.npy", np.array([f"c{i % 2}" for i in range(20)]))
    (tmp_path / "l.txt").write_text("\n".join(["a"] * 3))
    cli("create", memdir, "--encoder", "none", "--dim", "12", check=True)
    added = json_lines(cli("add-vectors", memdir, "--vectors", tmp_path / "v.npy",
                           "--labels", tmp_path / "l.npy", "--json", check=True))[0]
    assert added["added"] == 20 and added["items"] == 20
    mismatch = cli("add-vectors", memdir, "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "l.txt")
    assert mismatch.returncode == 1 and "20 vectors but 3 labels" in mismatch.stderr
    np.save(tmp_path / "wrong.npy", unit_vectors(2, 5))
    wrong = cli("add-vectors", memdir, "--vectors", tmp_path / "wrong.npy", "--labels", tmp_path / "l.txt")
    assert wrong.returncode == 1 and "dimension 12" in wrong.stderr


def test_a_labels_text_file_as_editors_write_it(tmp_path, cli):
    """A byte-order mark (Windows editors) started the first label ('\ufeffc0', a class
    of its own); a blank line at the end made "3 vectors but 4 labels", and one inside it
    "labels must not be empty", neither saying where."""
    import numpy as np
    from conftest import unit_vectors

    memdir = tmp_path / "mem"
    np.save(tmp_path / "v.npy", unit_vectors(3, 4))
    cli("create", memdir, "--encoder", "none", "--dim", "4", check=True)
    (tmp_path / "blank.txt").write_text("c0\n\nc1\n")
    blank = cli("add-vectors", memdir, "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "blank.txt")
    assert blank.returncode == 1 and "line 2 is blank" in blank.stderr
    (tmp_path / "l.txt").write_bytes("\ufeffc0\nc1\nc0\n\n".encode())
    cli("add-vectors", memdir, "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "l.txt", check=True)
    assert json_lines(cli("info", memdir, "--json"))[0]["classes"] == {"c0": 2, "c1": 1}


def test_a_labels_text_file_is_split_at_line_ends_only(tmp_path, cli):
    """Lines were split as str.splitlines splits them: a label holding a form feed, NEL or
    U+2028 became two, and every later label went to the row after its own. (A form feed
    or NEL, control characters, are no label since; U+2028 and U+2029 are.)"""
    import numpy as np
    from conftest import unit_vectors

    memdir = tmp_path / "mem"
    np.save(tmp_path / "v.npy", unit_vectors(4, 4))
    cli("create", memdir, "--encoder", "none", "--dim", "4", check=True)
    (tmp_path / "l.txt").write_bytes("a\u2028b\r\nc\u2029d\re\nf\n".encode())
    cli("add-vectors", memdir, "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "l.txt", check=True)
    assert json_lines(cli("info", memdir, "--json"))[0]["classes"] == {"a\u2028b": 1, "c\u2029d": 1, "e": 1, "f": 1}
    # a form feed or NEL is not split at either; as a control character it is no label, on its line
    for control in ("\x0c", "\x85"):
        (tmp_path / "l.txt").write_bytes(f"a\nc{control}d\ne\nf\n".encode())
        refused = cli("add-vectors", memdir, "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "l.txt")
        assert refused.returncode == 1 and f"line 2: label {'c' + control + 'd'!r}" in refused.stderr, refused.stderr


def test_a_labels_text_file_with_whitespace_around_a_label_is_refused(tmp_path, cli):
    """"cat " (a trailing space or tab, unseen in the file) was added as a class apart
    from "cat"; the line is named now and nothing is added."""
    import numpy as np
    from conftest import unit_vectors

    memdir = tmp_path / "mem"
    np.save(tmp_path / "v.npy", unit_vectors(3, 4))
    cli("create", memdir, "--encoder", "none", "--dim", "4", check=True)
    for text, line in (("cat\ncat \ndog\n", 2), ("cat\ncat\n dog\n", 3), ("cat\t\ncat\ndog\r\n", 1)):
        (tmp_path / "l.txt").write_text(text)
        refused = cli("add-vectors", memdir, "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "l.txt")
        assert refused.returncode == 1 and f"line {line} (" in refused.stderr and "whitespace" in refused.stderr
        assert refused.stdout == "" and json_lines(cli("info", memdir, "--json"))[0]["items"] == 0


def test_json_lines_never_carry_nan(capsys):
    import json

    import numpy as np

    from vismem.cli import emit

    emit({"accuracy": float("nan"), "scores": [np.float32("inf"), 0.5], "k": np.int64(3)})
    line = capsys.readouterr().out

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    assert json.loads(line, parse_constant=refuse) == {"accuracy": None, "scores": [None, 0.5], "k": 3}


def test_labels_and_paths_are_shown_as_given_never_as_markup(tmp_path, cli):
    # Rich reads "[...]" as a style tag: "cats [old]" lost "[old]" and "[/oops]" ended the
    # command with a traceback, in every human-readable output that showed a label
    import io

    import numpy as np
    from conftest import unit_vectors
    from rich.console import Console

    from vismem import Memory
    from vismem.explain import decision_table

    memdir, labels = tmp_path / "mem", ["[/oops]", "cats [old]", "[bold]x"] * 10
    np.save(tmp_path / "v.npy", unit_vectors(30, 8, seed=1))
    np.save(tmp_path / "q[red].npy", unit_vectors(3, 8, seed=2))
    (tmp_path / "labels.txt").write_text("\n".join(labels))
    cli("create", memdir, "--encoder", "none", "--dim", "8", check=True)
    cli("add-vectors", memdir, "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "labels.txt", check=True)
    (tmp_path / "truth.txt").write_text("\n".join(labels[:3]))
    for args in (["classify", "--queries", tmp_path / "q[red].npy", "-k", "30"],
                 ["search", "--queries", tmp_path / "q[red].npy", "-k", "30"],
                 ["eval", "--queries", tmp_path / "q[red].npy", "--labels", tmp_path / "truth.txt"],
                 ["info"]):
        shown = cli(args[0], memdir, *args[1:], check=True)
        assert "Traceback" not in shown.stderr
        assert all(label in shown.stdout for label in set(labels)), (args[0], shown.stdout)
        if args[0] in ("classify", "search"):
            assert f"{tmp_path / 'q[red].npy'}[0]" in shown.stdout
    with Memory.open(memdir) as memory:
        decision = memory.classify_vectors(unit_vectors(1, 8, seed=2), k=30)[0]
    screen = Console(file=io.StringIO(), width=200)  # markup on, as a caller's console may have it
    screen.print(decision_table(decision))
    assert all(label in screen.file.getvalue() for label in set(labels))


def test_help_names_every_value_as_its_text_does(cli):
    """`--help` names values as argparse does and as the help texts speak of them (MEMDIR,
    --label LABEL, --batch-size N), not by Python type (Typer's {memdir}, <list[int]>)."""
    import re

    from vismem.cli import load_commands

    for command in load_commands().registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        shown = cli(name, "--help", check=True).stdout
        usage = shown.splitlines()[0]
        assert re.fullmatch(r"Usage: vismem [a-z-]+ \[OPTIONS\]( [{\[][A-Z_]+[}\]](\.\.\.)?)*", usage), usage
        options = [line for line in shown.splitlines() if re.match(r"\s+-", line)]
        assert options and not [line for line in options if "<" in line.split("  ")[0]], name
    assert "--id ID " in cli("remove", "--help").stdout and "{MEMDIR}" in cli("remove", "--help").stdout


def test_add_vectors_again_adds_only_the_rows_missing(tmp_path, cli):
    """Running `add-vectors` again on the same file (after Ctrl-C) added every row again:
    the rows held are skipped and named, unless --allow-duplicates."""
    import numpy as np
    from conftest import unit_vectors

    memdir = tmp_path / "mem"
    vectors = unit_vectors(12, 6)
    np.save(tmp_path / "part.npy", vectors[:5])
    np.save(tmp_path / "all.npy", np.concatenate([vectors, vectors[3:4]]))  # row 12 repeats row 3
    (tmp_path / "l.txt").write_text("\n".join(f"c{i % 2}" for i in range(12)) + "\nc1")  # row 12 as row 3
    (tmp_path / "part.txt").write_text("\n".join(f"c{i % 2}" for i in range(5)))
    cli("create", memdir, "--encoder", "none", "--dim", "6", check=True)
    first = json_lines(cli("add-vectors", memdir, "--vectors", tmp_path / "part.npy", "--labels",
                           tmp_path / "part.txt", "--json", check=True))[0]
    assert first == {"added": 5, "ids": first["ids"], "skipped": 0, "skipped_rows": [], "conflicts": 0,
                     "conflict_rows": [], "items": 5}
    again = json_lines(cli("add-vectors", memdir, "--vectors", tmp_path / "all.npy", "--labels", tmp_path / "l.txt",
                           "--json", check=True))[0]
    assert again["added"] == 7 and len(again["ids"]) == 7 and again["items"] == 12 and again["skipped"] == 6
    assert again["skipped_rows"] == ([{"row": k, "duplicate_of": first["ids"][k]} for k in range(5)]
                                     + [{"row": 12, "duplicate_of": first["ids"][3]}])
    told = cli("add-vectors", memdir, "--vectors", tmp_path / "all.npy", "--labels", tmp_path / "l.txt", check=True)
    assert "added 0 vectors, skipped 13 already held; memory now holds 12" in told.stdout
    allowed = json_lines(cli("add-vectors", memdir, "--vectors", tmp_path / "part.npy", "--labels",
                             tmp_path / "part.txt", "--allow-duplicates", "--json", check=True))[0]
    assert allowed["added"] == 5 and allowed["skipped"] == 0 and allowed["items"] == 17


def test_a_vector_or_image_held_under_another_label_is_a_conflict_not_a_duplicate(tmp_path, cli):
    """`add-vectors` skipped a row the memory held under another label as "already held",
    and `add` an image held under another label as a duplicate, both exiting 0: the
    label given was lost without a word. Both now name it as a conflict (with the label
    held and the fix), add nothing for it and exit 3; a duplicate with the same label is
    skipped as before."""
    import numpy as np
    from conftest import unit_vectors

    from vismem import Memory

    vectors = unit_vectors(3, 4)
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "first.txt").write_text("cat\ndog\nfox\n")
    (tmp_path / "again.txt").write_text("cat\nbird\nfox\n")
    cli("create", tmp_path / "vec", "--encoder", "none", "--dim", "4", check=True)
    ids = json_lines(cli("add-vectors", tmp_path / "vec", "--vectors", tmp_path / "v.npy", "--labels",
                         tmp_path / "first.txt", "--json", check=True))[0]["ids"]
    told = cli("add-vectors", tmp_path / "vec", "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "again.txt")
    assert told.returncode == 3
    assert "added 0 vectors, skipped 2 already held, 1 held under another label" in told.stdout
    assert (f"row 1: conflicting label: item {ids[1]} holds this content labelled 'dog', not 'bird'; "
            f"relabel item {ids[1]} if 'bird' is right") in told.stderr
    again = cli("add-vectors", tmp_path / "vec", "--vectors", tmp_path / "v.npy", "--labels", tmp_path / "again.txt",
                "--json")
    assert again.returncode == 3 and json_lines(again)[0] == {
        "added": 0, "ids": [], "skipped": 2, "skipped_rows": [{"row": 0, "duplicate_of": ids[0]},
                                                              {"row": 2, "duplicate_of": ids[2]}],
        "conflicts": 1, "conflict_rows": [{"row": 1, "label": "bird", "duplicate_of": ids[1], "held_label": "dog"}],
        "items": 3}
    assert cli("add-vectors", tmp_path / "vec", "--vectors", tmp_path / "v.npy", "--labels",
               tmp_path / "first.txt").returncode == 0  # the same labels: plain duplicates
    with Memory.open(tmp_path / "vec") as memory:
        assert memory.class_counts() == {"cat": 1, "dog": 1, "fox": 1}

    red, green = (200, 10, 10), (10, 200, 10)
    for file, colour in (("a/cat/1.png", red), ("a/cat/2.png", green), ("b/dog/1.png", red)):
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), colour).save(tmp_path / file)
    cli("create", tmp_path / "img", "--encoder", "pixels", check=True)
    held = json_lines(cli("add", tmp_path / "img", tmp_path / "a", "--json", check=True))[-1]["ids"]
    dog = cli("add", tmp_path / "img", tmp_path / "b", "--json")
    assert dog.returncode == 3
    done = json_lines(dog)[-1]
    assert (done["added"], done["skipped"], done["conflicts"]) == (0, 1, 1)
    assert done["skipped_items"][0]["reason"].startswith(
        f"conflicting label: item {held[0]} holds this content labelled 'cat', not 'dog'; ")
    told = cli("add", tmp_path / "img", tmp_path / "b")
    assert "skipped 1 (0 duplicates, 1 with a conflicting label)" in told.stdout and told.returncode == 3
    assert cli("add", tmp_path / "img", tmp_path / "a").returncode == 0  # the same labels: plain duplicates
    with Memory.open(tmp_path / "img") as memory:
        assert memory.class_counts() == {"cat": 2}
def test_counts_of_one_are_singular(tmp_path, cli):
    """It said "added 1 vectors", "1 items in 1 classes", "holds 1 vectors"."""
    import numpy as np
    from conftest import unit_vectors

    memdir = tmp_path / "mem"
    np.save(tmp_path / "one.npy", unit_vectors(1, 6))
    (tmp_path / "one.txt").write_text("cat\n")
    cli("create", memdir, "--encoder", "none", "--dim", "6", check=True)
    added = cli("add-vectors", memdir, "--vectors", tmp_path / "one.npy", "--labels", tmp_path / "one.txt",
                check=True).stdout
    assert "added 1 vector, skipped 0 already held; memory now holds 1" in added
    info = cli("info", memdir, check=True).stdout
    assert "items       1 in 1 class\n" in info and ", 1 vector, " in info
    compacted = cli("compact", memdir, check=True).stdout
    assert "holds 1 vector, " in compacted and "reclaimed 0 slots" in compacted
    # (prune said "soft pruning on 1 item": it refuses one item now, having none to query it against)
    np.save(tmp_path / "two.npy", unit_vectors(2, 6, seed=1))
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    cli("add-vectors", memdir, "--vectors", tmp_path / "two.npy", "--labels", tmp_path / "two.txt", check=True)
    pruned = cli("prune", memdir, "--mode", "soft", check=True).stdout
    assert "soft pruning on 3 items: " in pruned and " items with v > 0" in pruned


def test_counted():
    from vismem.cli import counted

    assert [counted(n, "item") for n in (0, 1, 2, 1200)] == ["0 items", "1 item", "2 items", "1,200 items"]
    assert (counted(1, "query"), counted(2, "query"), counted(3, "class")) == ("1 query", "2 queries", "3 classes")
