"""vismem.sklearn: scikit-learn's own estimator checks, agreement with KNeighborsClassifier,
add without refit, exact forgetting, explanations, and Pipelines from images to labels."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from vismem.sklearn import MemoryClassifier, MemoryEncoder


@parametrize_with_checks([
    MemoryClassifier(),
    MemoryClassifier(vote="hybrid", prototypes_per_class=2, feature_transform="whiten", components=8,
                     shrinkage=0.1, power=0.5),
])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    rows = np.random.default_rng(0).permutation(len(d.target))
    return d.data[rows[:1200]], d.target[rows[:1200]], d.data[rows[1200:]], d.target[rows[1200:]]


def test_plurality_decides_as_kneighbors_classifier(digits):
    x, y, tx, ty = digits
    ours = MemoryClassifier(k=7, vote="plurality").fit(x, y)
    theirs = KNeighborsClassifier(7, metric="cosine", algorithm="brute").fit(x, y)
    assert (ours.predict(tx) == theirs.predict(tx)).all()
    np.testing.assert_allclose(ours.predict_proba(tx), theirs.predict_proba(tx))
    d_ours, i_ours = ours.kneighbors(tx[:50], 5)
    d_theirs, i_theirs = theirs.kneighbors(tx[:50], 5)
    np.testing.assert_allclose(d_ours, d_theirs, atol=1e-5)
    assert (i_ours[:, 0] == i_theirs[:, 0]).mean() > 0.95  # equal distances may order either way
    assert ours.score(tx, ty) == pytest.approx(theirs.score(tx, ty))


def test_partial_fit_adds_a_class_without_refitting(digits):
    x, y, tx, ty = digits
    old = y != 9
    clf = MemoryClassifier(k=5, feature_transform="whiten", components=32, shrinkage=0.1).fit(x[old], y[old])
    fingerprint = clf.transform_.fingerprint
    assert 9 not in clf.classes_
    clf.partial_fit(x[~old], y[~old])
    assert clf.transform_.fingerprint == fingerprint  # adding never silently refits
    assert 9 in clf.classes_ and clf.ids_.tolist() == list(range(len(y)))
    nines = ty == 9
    assert (clf.predict(tx[nines]) == 9).mean() > 0.9
    assert clf.score(tx[~nines], ty[~nines]) > 0.9


def test_partial_fit_keeps_labels_of_one_kind(digits):
    """String labels added to int classes turned every class into a string: 3 and "3"
    became one class and predict answered "3" where it answered 3. Labels of another kind
    (in y or in `classes`) are refused now, nothing changed."""
    x, y, tx, _ = digits
    clf = MemoryClassifier(k=5).fit(x[:300], y[:300])
    before = clf.predict(tx)
    for labels, classes in ((y[300:310].astype(str), None), (y[300:310], ["10"])):
        with pytest.raises(ValueError, match="labels given are strings, but this estimator's classes are numbers"):
            clf.partial_fit(x[300:310], labels, classes=classes)
    assert clf.classes_.tolist() == list(range(10)) and len(clf.ids_) == 300
    np.testing.assert_array_equal(clf.predict(tx), before)
    with pytest.raises(ValueError, match="labels given are numbers, but this estimator's classes are strings"):
        MemoryClassifier().partial_fit(x[:10], y[:10].astype(str), classes=np.arange(10))
    named = MemoryClassifier(k=1).partial_fit(x[:10], y[:10].astype(object).astype(str).astype(object),
                                              classes=["0", "11"])
    assert named.partial_fit(x[10:20], y[10:20].astype(str)).classes_.tolist()[:3] == ["0", "1", "11"]
    assert clf.partial_fit(x[300:310], y[300:310].astype(float)).predict(tx[:3]).tolist() == before[:3].tolist()


@pytest.mark.parametrize("kwargs", [
    {"vote": "rank"},
    {"vote": "hybrid", "prototypes_per_class": 2},
    {"vote": "softmax", "feature_transform": "whiten", "components": 24, "shrinkage": 0.1},
])
def test_forget_leaves_nothing_behind(digits, kwargs):
    x, y, tx, _ = digits
    clf = MemoryClassifier(k=5, **kwargs).fit(x[:600], y[:600]).partial_fit(x[600:], y[600:])
    gone = np.flatnonzero(y == 3)[:40].tolist() + [5, 6, 700]
    clf.forget(gone)
    keep = np.setdiff1d(np.arange(len(y)), gone)
    fresh = MemoryClassifier(k=5, **kwargs).fit(x[keep], y[keep])
    assert clf.transform_.fingerprint == fresh.transform_.fingerprint
    np.testing.assert_allclose(clf.predict_proba(tx), fresh.predict_proba(tx), atol=1e-6)
    _, ids = clf.kneighbors(tx, 10)
    _, rows = fresh.kneighbors(tx, 10)
    assert not np.isin(ids, gone).any() and (ids == keep[rows]).mean() > 0.99
    clf.forget(mask=clf.ids_ >= 0)
    with pytest.raises(ValueError, match="empty"):
        clf.predict(tx[:1])
    assert clf.partial_fit(x[:20], y[:20]).ids_.min() == len(y)  # ids are never reused
    with pytest.raises(ValueError, match="no stored items"):
        clf.forget([0])


def test_explain_and_its_counterfactual_agree_with_the_estimator(digits):
    x, y, tx, _ = digits
    clf = MemoryClassifier(k=10, vote="rank").fit(x, y)
    shares = clf.predict_proba(tx).max(axis=1)
    q = tx[int(np.argmin(shares)):][:1]  # the closest call
    why = clf.explain(q)[0]
    assert why.label == clf.predict(q)[0] and len(why.neighbors) == 10
    assert sum(n.contribution for n in why.neighbors) == pytest.approx(1.0)
    assert [n.id for n in why.neighbors] == clf.kneighbors(q, 10)[1][0].tolist()
    cf = why.counterfactual
    assert cf.exact and cf.remove and cf.label == why.label
    clf.set_weight(cf.block, 0.0)
    assert clf.predict(q)[0] == cf.label_after_block != why.label
    clf.set_weight(cf.block, 1.0)
    assert clf.forget(cf.remove).predict(q)[0] == cf.label_after_remove != why.label


def test_grid_search_over_votes_and_transforms(digits):
    x, y, tx, ty = digits
    grid = GridSearchCV(MemoryClassifier(), {"k": [1, 10], "vote": ["rank", "plurality"],
                                             "feature_transform": ["none", "center"]}, cv=3)
    grid.fit(x[:600], y[:600])
    assert set(grid.best_params_) == {"k", "vote", "feature_transform"}
    assert grid.score(tx, ty) > 0.9


def test_pipeline_from_pil_images_to_labels(lite0):
    from vismem.datasets import load_digits_images, split_per_class

    images, labels = load_digits_images()
    train, test = split_per_class(labels, [6, 2], seed=0)
    for encoder in ("pixels", lite0):
        pipe = make_pipeline(MemoryEncoder(encoder), MemoryClassifier(k=3))
        pipe.fit([images[i] for i in train], [labels[i] for i in train])
        accuracy = pipe.score([images[i] for i in test], [labels[i] for i in test])
        assert accuracy > 0.6, (encoder, accuracy)


def test_encoder_reads_paths_and_names_bad_ones(tmp_path, digits):
    from PIL import Image

    from vismem.errors import InvalidInputError

    Image.fromarray(np.uint8(digits[0][0].reshape(8, 8) * 15)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not an image")
    enc = MemoryEncoder("pixels")
    assert enc.transform([tmp_path / "a.png"]).shape == (1, 768)
    with pytest.raises(InvalidInputError, match="b.png"):
        enc.transform([tmp_path / "b.png"])


def test_encoder_sees_pil_images_as_the_files_show_them(tmp_path):
    """A PIL image is taken as `add` and `classify` take it: upright by its EXIF
    orientation, 16-bit grey by its full range, transparency over white."""

    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.chelsea()).resize((96, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, as phones do
    photo.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    grey = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(grey).save(tmp_path / "deep.png")  # 16-bit grey
    rgba = np.dstack([np.asarray(photo), np.where(np.arange(96) < 48, 0, 255)[None, :].repeat(64, 0)])
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(tmp_path / "alpha.png")
    enc = MemoryEncoder("pixels")
    for name in ("turned.jpg", "deep.png", "alpha.png"):
        with Image.open(tmp_path / name) as image:
            from_pil = enc.transform([image])
        np.testing.assert_allclose(from_pil, enc.transform([tmp_path / name]), atol=1e-6, err_msg=name)


def test_a_fitted_pipeline_from_images_pickles(digits):
    import pickle

    from vismem.datasets import load_digits_images

    images, labels = load_digits_images()
    pipe = make_pipeline(MemoryEncoder("pixels"), MemoryClassifier(k=3)).fit(images[:60], labels[:60])
    again = pickle.loads(pickle.dumps(pipe))
    assert again.predict(images[60:80]).tolist() == pipe.predict(images[60:80]).tolist()


def test_encoder_takes_one_path_given_alone_as_one_image(tmp_path):
    """transform("a.png") tried to read the files "a", ".", "p", "n", "g"."""
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "a.png")
    enc = MemoryEncoder("pixels")
    expected = enc.transform([tmp_path / "a.png"])
    for given in (str(tmp_path / "a.png"), tmp_path / "a.png"):
        np.testing.assert_array_equal(enc.transform(given), expected)


def test_encoder_given_a_pixel_array_or_none_says_what_it_takes():
    """transform(digits.images) (a numpy array of pictures) failed inside pathlib with a
    TypeError, and transform(None) inside list(); Memory.classify named the way for both."""
    from sklearn.datasets import load_digits

    from vismem.errors import InvalidInputError

    pictures = load_digits().images[:2]
    enc = MemoryEncoder("pixels")
    with pytest.raises(InvalidInputError, match=r"MemoryEncoder.transform takes image files or PIL images, got "
                                                r"ndarray: give a pixel array as PIL.Image.fromarray\(array\)$"):
        enc.transform(pictures)
    with pytest.raises(InvalidInputError, match="MemoryEncoder.transform takes a list of images, or one alone, "
                                                "got NoneType"):
        enc.transform(None)


def test_an_explanation_s_label_is_of_the_kind_of_its_other_labels(digits):
    """explain's label was a numpy scalar (repr `label=np.int64(2)`) where its vote shares'
    keys, its neighbours' and its counterfactual's labels are Python values."""
    x, y, tx, _ = digits
    for labels in (y, y.astype(str)):
        [explained] = MemoryClassifier(k=5).fit(x, labels).explain(tx[:1])
        assert type(explained.label) is type(next(iter(explained.proba))) is type(explained.neighbors[0].label)
        assert type(explained.label) is type(explained.counterfactual.label)
        assert repr(explained).startswith(f"Explanation(label={explained.label!r}, ")


@pytest.mark.parametrize("vote", ["prototype", "hybrid"])
def test_a_blocked_class_leaves_the_prototypes(digits, vote):
    """Blocked items (weight 0) shape no prototype, as in a memory on disk: a class whose
    every item is blocked gets no vote; unblocked, the estimator is the fresh fit again."""
    x, y, tx, _ = digits
    clf = MemoryClassifier(k=5, vote=vote).fit(x, y)
    before = clf.predict_proba(tx)
    clf.set_weight(clf.ids_[y == 3], 0.0)
    assert (clf.predict(tx) != 3).all() and (clf.predict_proba(tx)[:, 3] == 0).all()
    clf.set_weight(clf.ids_[y == 3], 1.0)
    np.testing.assert_allclose(clf.predict_proba(tx), before, atol=1e-6)


def test_prototypes_built_after_forget_follow_the_ids(digits):
    """A prototype vote chosen after `forget` (ids no longer row numbers) explains as a
    fresh fit on the remaining items does."""
    x, y, tx, _ = digits
    keep = np.arange(3, 200)
    clf = MemoryClassifier(k=5).fit(x[:200], y[:200]).forget([0, 1, 2]).set_params(vote="prototype")
    fresh = MemoryClassifier(k=5, vote="prototype").fit(x[keep], y[keep])
    found = [(ours.counterfactual.remove, theirs.counterfactual.remove)
             for ours, theirs in zip(clf.explain(tx[:5], max_removals=20), fresh.explain(tx[:5], max_removals=20),
                                     strict=True)]
    assert sum(theirs is not None for _, theirs in found) >= 3
    assert all(ours == (None if theirs is None else keep[theirs].tolist()) for ours, theirs in found)


def test_set_weight_refuses_what_a_memory_refuses(digits):
    """Weights a memory on disk refuses (negative, NaN, inf, over 1e6) and ids not stored
    fail with the fix in the message and change nothing, as `forget` does."""
    x, y, tx, _ = digits
    clf = MemoryClassifier(k=5).fit(x[:300], y[:300])
    before = clf.predict_proba(tx)
    for weight in (-1.0, float("nan"), float("inf"), 1e7):
        with pytest.raises(ValueError, match="weight must be a finite number from 0 to 1,000,000"):
            clf.set_weight(clf.ids_[:3], weight)
    with pytest.raises(ValueError, match=r"no stored items with ids \[300\]"):
        clf.set_weight([0, 300], 0.0)
    np.testing.assert_array_equal(clf.predict_proba(tx), before)
    assert clf.set_weight(0, 2.0)._weights[0] == 2.0  # one id given alone


def test_a_k_past_the_vote_limit_fails_at_fit(digits):
    """k above 1000 (VoteParams' limit) fails in fit, as scikit-learn validates; it fitted
    and then failed in predict."""
    from sklearn.utils._param_validation import InvalidParameterError

    x, y, _, _ = digits
    with pytest.raises(InvalidParameterError, match="'k' parameter"):
        MemoryClassifier(k=1001).fit(x[:50], y[:50])
    assert MemoryClassifier(k=1000).fit(x[:1000], y[:1000]).predict(x[:2]).shape == (2,)


@pytest.mark.parametrize("vote", ["rank", "plurality", "hybrid"])
def test_a_k_above_the_items_stored_is_refused_as_kneighbors_classifier_refuses_it(digits, tmp_path, vote):
    """k=10 over 5 items voted with all 5 (every k past 5 the same vote) and said nothing,
    where KNeighborsClassifier's predict raises ValueError, and this estimator's own
    kneighbors did. Now predict, predict_proba, score and explain raise it too, in RAM and
    over a memory on disk; the prototype vote, which asks no neighbours, still answers."""
    from vismem import Memory

    x, y, tx, ty = digits
    with pytest.raises(ValueError, match="Expected n_neighbors <= n_samples_fit"):
        KNeighborsClassifier(n_neighbors=10).fit(x[:5], y[:5]).predict(tx[:1])
    clf = MemoryClassifier(k=10, vote=vote).fit(x[:5], y[:5])
    for call in (clf.predict, clf.predict_proba, clf.explain, lambda q: clf.score(q, ty[:2])):
        with pytest.raises(ValueError, match="n_neighbors = 10, n_samples_fit = 5.*set k to at most 5"):
            call(tx[:2])
    assert clf.set_params(k=5).predict(tx[:2]).shape == (2,)
    assert MemoryClassifier(k=10, vote="prototype").fit(x[:5], y[:5]).predict(tx[:2]).shape == (2,)
    labels = [str(label) for label in y[:5]]
    with Memory.create(tmp_path / "m", encoder=None, dim=x.shape[1]) as memory:
        memory.add_vectors(x[:5], labels)
        on_disk = MemoryClassifier(memory=memory, k=10, vote=vote).fit()
        with pytest.raises(ValueError, match="n_neighbors = 10, n_samples_fit = 5 .items of the memory"):
            on_disk.predict(tx[:2])
        assert on_disk.set_params(k=5).fit().predict(tx[:2]).shape == (2,)


def test_an_edit_that_leaves_too_little_to_whiten_changes_nothing(digits):
    """The transform is refitted on what remains before anything is removed: one item
    cannot be whitened, and the estimator stays as it was (it was left holding one item
    with the old search rows, and predict failed with an IndexError)."""
    x, y, tx, _ = digits
    clf = MemoryClassifier(k=3, feature_transform="whiten").fit(x[:5], y[:5])
    before = clf.predict_proba(tx)
    with pytest.raises(ValueError, match="cannot whiten"):
        clf.forget([0, 1, 2, 3])
    assert clf.ids_.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(clf.predict_proba(tx), before)
    assert clf.forget([0, 1]).predict(tx[:2]).shape == (2,)
    clf.forget(mask=clf.ids_ >= 0)
    with pytest.raises(ValueError, match="cannot whiten"):  # it kept the item, searched as given
        clf.partial_fit(x[:1], y[:1])
    assert clf.ids_.tolist() == []
    with pytest.raises(ValueError, match="empty"):
        clf.predict(tx[:1])


def test_ids_are_whole_numbers(digits):
    """`forget` and `set_weight` take ids as a `Memory` does: 1.7 and True were cast to
    item 1 (and "12" to item 12), each an edit of an item the caller did not name."""
    x, y, tx, _ = digits
    clf = MemoryClassifier(k=5).fit(x[:300], y[:300])
    before = clf.predict_proba(tx)
    for ids in ([1.7], [True], "12", np.array([1.0])):
        with pytest.raises(ValueError, match="item ids are integers|list of integer item ids"):
            clf.forget(ids)
        with pytest.raises(ValueError, match="item ids are integers|list of integer item ids"):
            clf.set_weight(ids, 0.0)
    assert clf.ids_.tolist() == list(range(300))
    np.testing.assert_array_equal(clf.predict_proba(tx), before)
    assert clf.forget(np.int64(1)).forget(np.array([[2, 3]])).ids_[:3].tolist() == [0, 4, 5]


def test_kneighbors_takes_a_whole_number_of_neighbours(digits):
    """n_neighbors 2.5 returned 2 neighbours and "3" returned 3; KNeighborsClassifier
    refuses both with a TypeError, and so does this estimator now."""
    x, y, tx, _ = digits
    clf = MemoryClassifier(k=5).fit(x[:300], y[:300])
    for bad in (2.5, 2.0, "3", True):
        with pytest.raises(TypeError, match="n_neighbors must be a positive integer"):
            clf.kneighbors(tx[:2], bad)
    with pytest.raises(ValueError, match="n_neighbors must be a positive integer"):
        clf.kneighbors(tx[:2], 0)
    assert clf.kneighbors(tx[:2], np.int64(3))[1].shape == (2, 3)


def test_a_grid_of_numpy_numbers_searches(digits, tmp_path):
    """A grid written as np.arange gives numpy ints: k=np.int64(3) reached FAISS, which takes
    only a Python int (a TypeError from its C++ layer), in RAM and through a memory alike;
    a memory's settings with numpy numbers could not be saved (JSON)."""
    from vismem import Memory
    from vismem.decide import VoteParams

    x, y, tx, _ = digits
    grid = GridSearchCV(MemoryClassifier(), {"k": np.arange(1, 4), "alpha": np.array([1.0, 2.0])}, cv=2)
    assert grid.fit(x[:200], y[:200]).best_params_["k"] in (1, 2, 3)
    with Memory.create(tmp_path / "m", encoder=None, dim=x.shape[1]) as memory:
        memory.add_vectors(x[:200], y[:200].astype(str))
        assert memory.classify_vectors(tx[:2], k=np.int64(3))[0].neighbors[2].id > 0
        memory.update_settings(vote=VoteParams(k=np.int64(5), alpha=np.float32(1.5)))
    with Memory.open(tmp_path / "m") as memory:
        assert memory.settings.vote == VoteParams(k=5, alpha=1.5)
        assert MemoryClassifier(memory=memory, k=np.int32(2)).fit().predict(tx[:2]).shape == (2,)


@pytest.mark.parametrize("vote", ["prototype", "softmax", "hybrid"])
def test_a_query_gets_the_same_vote_alone_as_in_a_batch(digits, vote):
    """One query was normalised by unit_rows' one-query shortcut, whose norm may differ in
    its last bit from the batch rule: on digits in 8 principal components its vote shares
    alone differed (~1e-7) from those it got in a batch, and scikit-learn's
    check_methods_subset_invariance failed for MemoryClassifier(vote="prototype")."""
    from sklearn.decomposition import PCA
    from sklearn.utils.estimator_checks import check_methods_subset_invariance

    x, y, tx, _ = digits
    pca = PCA(8, random_state=0).fit(x)
    clf = MemoryClassifier(k=10, vote=vote).fit(pca.transform(x), y)
    queries = pca.transform(tx[:100])
    alone = np.vstack([clf.predict_proba(queries[i:i + 1]) for i in range(len(queries))])
    np.testing.assert_array_equal(alone, clf.predict_proba(queries))
    check_methods_subset_invariance("MemoryClassifier", MemoryClassifier(vote=vote))


def test_a_pipeline_with_a_built_encoder_cross_validates(lite0):
    """clone deep-copied a built Encoder, and EfficientNet-Lite0's ONNX Runtime session
    cannot be copied: cross_val_score (and GridSearchCV) over
    make_pipeline(MemoryEncoder(create_encoder(...)), MemoryClassifier()) failed with a
    TypeError before fitting anything. The frozen encoder is shared by the clones now."""
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    from vismem.datasets import load_digits_images

    images, labels = load_digits_images()
    assert clone(MemoryEncoder(lite0)).encoder is lite0
    pipe = make_pipeline(MemoryEncoder(lite0), MemoryClassifier(k=3))
    scores = cross_val_score(pipe, images[:60], labels[:60], cv=2, error_score="raise")
    assert scores.shape == (2,) and (scores > 0.3).all()


def test_a_fitted_pipeline_with_a_built_encoder_saves_with_joblib(tmp_path, lite0):
    """A MemoryEncoder holding a built Encoder could not be pickled ("cannot pickle
    'onnxruntime...InferenceSession'" for EfficientNet-Lite0, "Can't pickle local object
    build_pixels.<locals>.embed" for pixels), so a fitted Pipeline could not be saved with
    joblib. The encoder pickles as what rebuilds it (name, weights, options) and its id."""
    import joblib

    from vismem.datasets import load_digits_images
    from vismem.encoders import EncoderOptions, create_encoder

    images, labels = load_digits_images()
    for encoder in (create_encoder("pixels", options=EncoderOptions(batch_size=7)), lite0):
        pipe = make_pipeline(MemoryEncoder(encoder), MemoryClassifier(k=3)).fit(images[:60], labels[:60])
        joblib.dump(pipe, tmp_path / "pipe.joblib")
        again = joblib.load(tmp_path / "pipe.joblib")
        rebuilt = again[0].encoder
        assert rebuilt is not encoder and rebuilt.id == encoder.id and again[0].encoder_ is rebuilt
        assert rebuilt.batch_size == encoder.batch_size  # its options too
        assert again.predict(images[60:120]).tolist() == pipe.predict(images[60:120]).tolist()
    assert again.predict_proba(images[60:120]).tolist() == pipe.predict_proba(images[60:120]).tolist()


def _onnx_mean_model(path, scale):
    """An onnx:PATH encoder whose vector is each channel's mean times `scale`: another
    scale is another weights file (another digest, so another id)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Mul", ["flat", "scale"], ["y"])],
        "mean", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [3], scale)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return f"onnx:{path}?image_size=8&resize_size=8"


def test_a_pickled_encoder_whose_weights_differ_on_load_is_refused(tmp_path):
    """A built encoder is rebuilt on load from its name and weights; other weights there
    (another file at the same path) would make vectors unlike those the pipeline was
    fitted on: refused, naming both ids."""
    import pickle
    import re

    from vismem.encoders import create_encoder
    from vismem.errors import EncoderError

    spec = _onnx_mean_model(tmp_path / "mean.onnx", [1.0, 2.0, 3.0])
    encoder = create_encoder(spec)
    saved = pickle.dumps(MemoryEncoder(encoder).fit())
    assert pickle.loads(saved).encoder.id == encoder.id
    _onnx_mean_model(tmp_path / "mean.onnx", [3.0, 2.0, 1.0])
    other = create_encoder(spec).id
    assert other != encoder.id
    with pytest.raises(EncoderError, match=f"{re.escape(encoder.id)}.*{re.escape(other)}"):
        pickle.loads(saved)


def test_an_encoder_built_by_hand_is_refused_when_pickled_naming_the_way():
    """An Encoder made by hand (not by create_encoder) has no name to rebuild it from. A
    deep copy still shares it, as clone does."""
    import copy
    import pickle

    from vismem.encoders import Encoder, Preprocessing

    hand = Encoder("mine", 3, Preprocessing(8, 8), "v1", lambda batch: batch.mean(axis=(1, 2)))
    with pytest.raises(pickle.PicklingError, match="built by hand.*pass the encoder by name"):
        pickle.dumps(MemoryEncoder(hand))
    assert copy.deepcopy(MemoryEncoder(hand, weights="w").fit()).encoder_ is hand


def test_a_pipeline_from_images_gives_pandas_output():
    """MemoryEncoder had no get_feature_names_out: pipeline.set_output(transform="pandas")
    raised ValueError, as did get_feature_names_out on a Pipeline ending with it."""
    pd = pytest.importorskip("pandas")
    from sklearn.decomposition import PCA
    from sklearn.exceptions import NotFittedError

    from vismem.datasets import load_digits_images

    images, labels = load_digits_images()
    enc = MemoryEncoder("pixels")
    with pytest.raises(NotFittedError):
        enc.get_feature_names_out()
    names = enc.fit(images[:4]).get_feature_names_out()
    assert names.tolist() == [f"memoryencoder{i}" for i in range(768)]
    frame = make_pipeline(MemoryEncoder("pixels")).set_output(transform="pandas").fit_transform(images[:40])
    assert isinstance(frame, pd.DataFrame) and frame.columns.tolist() == names.tolist()
    np.testing.assert_array_equal(frame.to_numpy(), enc.transform(images[:40]))
    pipe = make_pipeline(MemoryEncoder("pixels"), PCA(8), MemoryClassifier(k=3)).set_output(transform="pandas")
    pipe.fit(images[:60], labels[:60])
    assert pipe[:-1].transform(images[60:70]).columns.tolist() == [f"pca{i}" for i in range(8)]
    assert pipe.score(images[60:120], labels[60:120]) > 0.6
