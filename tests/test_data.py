"""The patch stream: geometry, sampling, synthesis, the two executors, and bad input."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vdsr.color import rgb_to_y
from vdsr.data import PatchSampler, crop_size, edge_pad, load_store, make_loader, pad_edges
from vdsr.data.loaders import dali_available, torch_crops
from vdsr.data.patches import PATCH, Draws, position_range, synthesize
from vdsr.data.store import to_y
from vdsr.errors import InputError
from vdsr.evaluate import degrade

HAVE_DALI = dali_available()[0]
# under CI the DALI tests run (and fail) even if DALI stopped importing: no skip hides a broken install
SKIP_DALI = not HAVE_DALI and not os.environ.get("CI")
CROP = crop_size([2, 3, 4])


def smooth_image(rng, h, w, channels=3) -> np.ndarray:
    """A natural-ish uint8 image: smooth gradients plus noise (so bicubic has work to do)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(yy / 7.0) * np.cos(xx / 11.0)
    img = base[..., None] + rng.normal(0, 20, (h, w, channels))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


@pytest.fixture
def folder(tmp_path, rng) -> Path:
    d = tmp_path / "train"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(smooth_image(rng, 120, 150)).save(d / "a.png")
    Image.fromarray(smooth_image(rng, 97, 131, 1)).save(d / "b.png")  # grey: its own Y
    Image.fromarray(smooth_image(rng, 140, 100)).save(d / "sub" / "c.png")
    return d


def test_crop_size_and_margin_cover_the_dependency_radius():
    assert crop_size([2, 3, 4]) == 84 and crop_size([2]) == 58 and crop_size([3]) % 3 == 0
    for s in (2, 3, 4):
        lo, hi = position_range(200, s, CROP)
        assert lo == 4 * s
        origin = (hi // s) * s - 4 * s
        assert origin + CROP <= 200 and (hi - origin) + PATCH + 4 * s <= CROP


@pytest.mark.parametrize("patch", [PATCH, 64])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_patch_equals_whole_image_degradation(scale, patch, rng):
    """The LR patch is exactly the same crop of the whole-image degradation (to 1e-5), for
    every patch position phase, flips and transposes included; at the paper's 41 x 41 and a
    larger patch (``patch_size``), whose crop is larger."""
    img = to_y(smooth_image(rng, 132, 156))
    store_images = [img]
    crop = crop_size([2, 3, 4], patch)
    assert crop == (CROP if patch == PATCH else 108)
    h, w = (img.shape[0] // scale) * scale, (img.shape[1] // scale) * scale
    whole = degrade(torch.from_numpy(img[:h, :w]).double()[None, None], scale)[0, 0].numpy()
    lo, hi = position_range(min(h, w), scale, crop)
    ys = np.array([lo, lo + 1, lo + scale - 1, (lo + hi) // 2, hi - 1, hi])
    xs = np.array([hi, lo + 2, lo, lo + 5, (lo + hi) // 2 + 1, lo + 3])
    n = len(ys)
    for fh, fv, tr in [(0, 0, 0), (1, 0, 0), (0, 1, 1), (1, 1, 1)]:
        d = Draws(np.zeros(n, int), ys, xs, np.full(n, scale), np.full(n, bool(fh)), np.full(n, bool(fv)), np.full(n, bool(tr)))
        crops = torch_crops(type("S", (), {"images": store_images})(), d, crop)
        _, _, oy, ox = d.crop_boxes(crop, patch)
        lr, hr = synthesize(crops, d.scale, oy, ox, patch=patch)
        assert lr.shape == hr.shape == (n, 1, patch, patch)
        for k in range(n):
            want_lr = whole[ys[k] : ys[k] + patch, xs[k] : xs[k] + patch]
            want_hr = img[ys[k] : ys[k] + patch, xs[k] : xs[k] + patch]
            for arr_name in ("want_lr", "want_hr"):
                a = locals()[arr_name]
                a = a[:, ::-1] if fh else a
                a = a[::-1] if fv else a
                a = a.T if tr else a
                got = (lr if arr_name == "want_lr" else hr)[k, 0].numpy()
                assert np.abs(got - a).max() <= 1e-5, (scale, k, arr_name, fh, fv, tr)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edge_patch_equals_whole_image_degradation(scale, rng):
    """With ``edge_patches`` (a mirrored border, ``pad_edges``), patches touching every edge
    and corner of the image are still exactly the whole image's degradation (the protocol's:
    the image mod-cropped, MATLAB's symmetric edges), flips and transposes included."""
    img = to_y(smooth_image(rng, 130, 157))  # neither side a multiple of 12
    store = type("S", (), {"images": [img.copy()], "pad": 0})()
    pad = edge_pad([2, 3, 4])
    pad_edges(store, pad, 12)
    h, w = 120, 156  # mod-cropped to the lcm of the scales
    assert store.images[0].shape == (h + 2 * pad, w + 2 * pad)
    assert np.array_equal(store.images[0][pad:-pad, pad:-pad], img[:h, :w])
    whole = degrade(torch.from_numpy(img[:h, :w]).double()[None, None], scale)[0, 0].numpy()
    ys = np.array([0, 0, h - PATCH, h - PATCH, 1, h // 2, scale - 1])
    xs = np.array([0, w - PATCH, 0, w - PATCH, w - PATCH - 1, 0, w // 3])
    n = len(ys)
    for fh, fv, tr in [(0, 0, 0), (1, 0, 0), (0, 1, 1), (1, 1, 1)]:
        flags = [np.full(n, bool(f)) for f in (fh, fv, tr)]
        d = Draws(np.zeros(n, int), ys + pad, xs + pad, np.full(n, scale), *flags)
        crops = torch_crops(store, d, CROP)
        _, _, oy, ox = d.crop_boxes(CROP, PATCH)
        lr, hr = synthesize(crops, d.scale, oy, ox)
        for k in range(n):
            for got, want in ((lr, whole), (hr, img)):
                a = want[ys[k] : ys[k] + PATCH, xs[k] : xs[k] + PATCH]
                a = a[:, ::-1] if fh else a
                a = a[::-1] if fv else a
                a = a.T if tr else a
                assert np.abs(got[k, 0].numpy() - a).max() <= 1e-5, (scale, k, fh, fv, tr)


def test_edge_sampler_reaches_every_edge_and_stays_inside(folder):
    """The padded sampler draws positions over the whole image, edges included, never into the
    mirrored border, with every crop inside the padded image; the plain sampler keeps 4s away."""
    store = load_store([folder], CROP)
    plain = PatchSampler(store.sizes, batch_size=64, patches_per_epoch=64 * 40, seed=1)
    pad = edge_pad([2, 3, 4])
    pad_edges(store, pad, 12)
    with pytest.raises(ValueError, match="already padded"):
        pad_edges(store, pad, 12)
    with pytest.raises(ValueError, match="multiple of every scale"):
        PatchSampler(store.sizes, batch_size=64, patches_per_epoch=64, pad=pad - 12)
    edge = PatchSampler(store.sizes, batch_size=64, patches_per_epoch=64 * 40, seed=1, pad=pad)
    for sampler, at_edge in ((plain, False), (edge, True)):
        ys, xs, touched = [], [], False
        for d in sampler.epoch(0):
            hw = np.array(sampler.sizes)[d.image]
            cy, cx, _, _ = d.crop_boxes(sampler.crop, PATCH)
            assert (cy >= 0).all() and (cx >= 0).all()
            assert (cy + sampler.crop <= hw[:, 0]).all() and (cx + sampler.crop <= hw[:, 1]).all()
            y, x = d.y - sampler.pad, d.x - sampler.pad  # in image coordinates
            h, w = hw[:, 0] - 2 * sampler.pad, hw[:, 1] - 2 * sampler.pad
            assert (y >= 0).all() and (x >= 0).all() and (y + PATCH <= h).all() and (x + PATCH <= w).all()
            touched |= bool(((y == 0) | (x == 0) | (y + PATCH == h) | (x + PATCH == w)).any())
            ys.append(y.min())
        assert touched == at_edge
        assert (min(ys) == 0) == at_edge
    grid = PatchSampler(store.sizes, batch_size=2, mode="fixed", seed=0, pad=pad)
    assert grid.grid[:, 1].min() == pad and grid.grid[:, 2].min() == pad  # the grid starts at the image corner


def test_store_y_matches_protocol_and_grey_is_own_y(folder):
    store = load_store([folder], CROP)
    assert [p.name for p in store.paths] == ["a.png", "b.png", "c.png"]  # sorted, recursive
    rgb = np.asarray(Image.open(folder / "a.png"))
    exact = rgb_to_y(torch.from_numpy(rgb).permute(2, 0, 1).double() / 255)[0].numpy()
    assert np.abs(store.images[0] - exact).max() <= 0.5 / 255
    assert np.abs(store.images[0] - exact).max() <= 1e-6  # in fact float32-exact
    grey = np.asarray(Image.open(folder / "b.png"))
    assert np.array_equal(store.images[1], grey.astype(np.float32) / 255)
    assert store.per_folder == {"train": 3}
    assert store.summary().startswith("3 training images of 3 found (train: 3)")


@pytest.mark.skipif(SKIP_DALI, reason="NVIDIA DALI not importable here (never skipped under CI)")
def test_dali_decoder_equals_pillow(folder):
    a = load_store([folder], CROP, decoder="pillow")
    b = load_store([folder], CROP, decoder="dali")
    assert b.decoder == "dali" and len(a.images) == len(b.images) == 3
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))


def reference_hr(store, d: Draws, patch: int = PATCH) -> np.ndarray:
    """HR patches by plain numpy: cut at (y, x), then flip_h, flip_v, transpose."""
    out = []
    for k in range(len(d.image)):
        p = store.images[d.image[k]][d.y[k] : d.y[k] + patch, d.x[k] : d.x[k] + patch]
        p = p[:, ::-1] if d.flip_h[k] else p
        p = p[::-1] if d.flip_v[k] else p
        out.append(p.T if d.transpose[k] else p)
    return np.stack(out)


@pytest.mark.parametrize("patch", [PATCH, 50])
@pytest.mark.parametrize("loader", ["torch", "device"] + ([] if SKIP_DALI else ["dali"]))
def test_crops_flips_and_mixed_scales(folder, loader, patch):
    """Every executor cuts the drawn patches (the paper's 41 x 41, or ``patch_size``), flips
    and transposes included, and mixes the scales inside a batch."""
    store = load_store([folder], crop_size([2, 3, 4], patch))
    sampler = PatchSampler(store.sizes, batch_size=16, patches_per_epoch=48, rotate=True, seed=3, patch=patch)
    assert sampler.crop == crop_size([2, 3, 4], patch) and (sampler.crop > CROP) == (patch > PATCH)
    draws = list(sampler.epoch(0))
    batches = list(make_loader(store, sampler, loader, "cpu").epoch(0))
    assert len(batches) == len(draws) == 3
    for d, (lr, hr, scale) in zip(draws, batches):
        assert lr.shape == hr.shape == (16, 1, patch, patch) and lr.dtype == torch.float32
        assert np.array_equal(hr[:, 0].numpy(), reference_hr(store, d, patch))
        assert scale.tolist() == d.scale.tolist()
    scales = torch.cat([b[2] for b in batches])
    assert set(scales.tolist()) == {2, 3, 4} and len(set(batches[0][2].tolist())) > 1  # mixed inside a batch
    flags = np.concatenate([np.stack([d.flip_h, d.flip_v, d.transpose]) for d in draws], axis=1)
    assert flags.any(axis=1).all() and (~flags).any(axis=1).all()  # every flag drawn both ways


@pytest.mark.skipif(SKIP_DALI, reason="NVIDIA DALI not importable here (never skipped under CI)")
@pytest.mark.parametrize("edges", [False, True])
def test_dali_and_torch_agree_on_the_same_draws(folder, edges):
    store = load_store([folder], CROP)
    if edges:  # edge_patches: the mirrored store
        pad_edges(store, edge_pad([2, 3, 4]), 12)
    sampler = PatchSampler(store.sizes, batch_size=16, patches_per_epoch=64, rotate=True, seed=5, pad=store.pad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = list(make_loader(store, sampler, "torch").epoch(1))
        dali = make_loader(store, sampler, "dali")
        got = list(dali.epoch(1))
        again = list(dali.epoch(2))  # the stream continues with the next epoch
    for (l0, h0, s0), (l1, h1, s1) in zip(ref, got):
        assert torch.equal(h0, h1) and torch.equal(s0, s1)
        assert (l0 - l1).abs().max().item() <= 1e-6  # synthesis before vs after the flips
    ref2 = list(make_loader(store, sampler, "torch").epoch(2))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(ref2, again))


def test_same_seed_same_batches_and_epochs_differ(folder):
    store = load_store([folder], CROP)
    make = lambda seed: make_loader(store, PatchSampler(store.sizes, batch_size=8, patches_per_epoch=16, seed=seed), "torch")  # noqa: E731
    a, b, c = (list(make(s).epoch(0)) for s in (1, 1, 2))
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1])
    assert not torch.equal(a[0][1], list(make(1).epoch(1))[0][1])


def test_shards_disjoint_equal_length_fixed_mode(folder):
    store = load_store([folder], CROP)
    samplers = [PatchSampler(store.sizes, batch_size=2, mode="fixed", seed=0, rank=r, world=2) for r in (0, 1)]
    assert samplers[0].grid_count == len(samplers[0].grid) > 4
    for epoch in (0, 1):
        keys = []
        for s in samplers:
            ds = list(s.epoch(epoch))
            assert len(ds) == s.batches_per_epoch == samplers[0].batches_per_epoch
            keys.append({(int(i), int(y), int(x)) for d in ds for i, y, x in zip(d.image, d.y, d.x)})
        assert len(keys[0]) == len(keys[1]) and not keys[0] & keys[1]
    # grid patches are disjoint 41x41 cells
    g = samplers[0].grid
    for i in np.unique(g[:, 0]):
        cells = g[g[:, 0] == i]
        assert len({(y // PATCH, x // PATCH) for _, y, x in cells}) == len(cells)


def test_fixed_subset_is_seeded_and_random_mode_shards_have_equal_length(folder):
    store = load_store([folder], CROP)
    full = PatchSampler(store.sizes, batch_size=2, mode="fixed", seed=0)
    sub = [PatchSampler(store.sizes, batch_size=2, mode="fixed", fixed_count=4, seed=s) for s in (0, 0, 1)]
    assert len(sub[0].grid) == 4 and np.array_equal(sub[0].grid, sub[1].grid)
    assert not np.array_equal(sub[0].grid, sub[2].grid)
    assert full.grid_count == sub[0].grid_count
    r = [PatchSampler(store.sizes, batch_size=4, patches_per_epoch=40, seed=0, rank=k, world=3) for k in range(3)]
    assert {len(s) for s in r} == {3}  # 40 // 3 = 13 patches per rank -> 3 full batches each
    d0, d1 = next(r[0].epoch(0)), next(r[1].epoch(0))
    assert not (np.array_equal(d0.y, d1.y) and np.array_equal(d0.x, d1.x))  # per-rank streams


def test_bad_input_is_converted_or_skipped_and_counted(tmp_path, rng):
    d = tmp_path / "messy"
    d.mkdir()
    Image.fromarray(smooth_image(rng, 100, 100)).save(d / "good.png")
    Image.fromarray((smooth_image(rng, 100, 100, 1).astype(np.uint16) * 257)).save(d / "deep16.png")
    Image.fromarray(smooth_image(rng, 100, 100)).convert("RGBA").save(d / "alpha.png")
    Image.fromarray(smooth_image(rng, 100, 100)).convert("P").save(d / "palette.png")
    Image.fromarray(smooth_image(rng, 100, 100)).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(smooth_image(rng, 60, 200)).save(d / "small.png")
    (d / "broken.png").write_bytes((d / "good.png").read_bytes()[:200])
    (d / "notes.txt").write_text("not an image")
    (d / "fake.jpg").write_text("not a jpeg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = load_store([d], CROP)
    messages = "\n".join(str(w.message) for w in caught)
    assert sorted(p.name for p in store.paths) == ["alpha.png", "cmyk.jpg", "deep16.png", "good.png", "palette.png"]
    assert sorted(p.name for p, _ in store.skipped) == ["broken.png", "fake.jpg", "notes.txt", "small.png"]
    assert sorted(p.name for p, _ in store.converted) == ["alpha.png", "cmyk.jpg", "deep16.png", "palette.png"]
    for name in ("broken.png", "fake.jpg", "notes.txt", "small.png", "alpha.png", "cmyk.jpg", "deep16.png", "palette.png"):
        assert name in messages
    assert "4 converted, 4 skipped" in store.summary()
    deep = store.images[[p.name for p in store.paths].index("deep16.png")]
    assert 0 <= deep.min() and deep.max() <= 1 and deep.std() > 0.01  # scaled to 8 bits, not clipped


def test_folder_without_usable_image_fails_before_training(tmp_path):
    d = tmp_path / "nothing"
    d.mkdir()
    Image.new("RGB", (30, 30)).save(d / "tiny.png")
    (d / "x.txt").write_text("x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="no usable training image"):
            load_store([d], CROP)
    with pytest.raises(InputError, match="no such folder"):
        load_store([tmp_path / "missing"], CROP)


def test_auto_loader_falls_back_with_one_warning(folder, monkeypatch):
    import vdsr.data.loaders as loaders

    store = load_store([folder], CROP)
    sampler = PatchSampler(store.sizes, batch_size=4, patches_per_epoch=8)
    monkeypatch.setattr(loaders, "dali_available", lambda: (False, "ImportError: no module named nvidia.dali"))
    with pytest.warns(UserWarning, match="DALI is not available.*PyTorch loader") as record:
        loader = make_loader(store, sampler, "auto")
    assert loader.executor == "torch" and len(record) == 1
    with pytest.raises(InputError, match="--loader dali"):
        make_loader(store, sampler, "dali")


def test_training_images_from_shared_data(shared_data):
    """The 291 images: one T91 image (t20, 78x78) is smaller than a patch plus margin (84)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = load_store([shared_data / "T91", shared_data / "BSD200"], CROP)
    assert len(store.images) == 290 and [p.name for p, _ in store.skipped] == ["t20.png"]
    assert any("t20.png" in str(w.message) for w in caught)
    grid = PatchSampler(store.sizes, mode="fixed", fixed_count=2490, seed=0)
    assert grid.grid_count == 13678 and len(grid.grid) == 2490 and len(grid) == 2490 // 64


@pytest.mark.parametrize("mode,edges", [("random", False), ("fixed", False), ("random", True)])
def test_device_stream_equals_the_torch_loader(folder, mode, edges):
    """The device-resident stream (run here on the CPU by the same code path) gives the torch
    loader's batches: HR bit for bit, the scales equal, LR within float32 rounding; also across
    epochs, flips and transposes, and from the mirrored store of ``edge_patches``."""
    from vdsr.data import DevicePatchStream

    store = load_store([folder], CROP)
    if edges:
        pad_edges(store, edge_pad([2, 3, 4]), 12)
    batch = 8 if mode == "random" else 2  # the fixed grid of these small images has 5 patches
    sampler = PatchSampler(store.sizes, batch_size=batch, mode=mode, patches_per_epoch=48, rotate=True, seed=3, pad=store.pad)
    stream = make_loader(store, sampler, "device", "cpu")
    assert isinstance(stream, DevicePatchStream) and len(stream) == len(sampler)
    assert stream.store.nbytes == 4 * sum(h * w for h, w in store.sizes)
    for epoch in (0, 1):
        ref = list(make_loader(store, sampler, "torch").epoch(epoch))
        got = list(stream.epoch(epoch))
        assert len(got) == len(ref) == len(sampler)
        for (l0, h0, s0), (l1, h1, s1) in zip(ref, got):
            assert h1.shape == (batch, 1, PATCH, PATCH) and l1.dtype == torch.float32
            assert torch.equal(h0, h1) and torch.equal(s0, s1)
            assert (l0 - l1).abs().max().item() <= 1e-6
    assert any(d.transpose.any() for d in sampler.epoch(0)) and any(d.flip_h.any() for d in sampler.epoch(0))


def test_device_stream_chunks_are_the_same_batches(folder):
    """Batches built several at once (``chunk``), a last chunk short, equal those built one at a
    time, bit for bit, in the same order, and ``chunk`` < 1 is refused."""
    from vdsr.data import DevicePatchStream

    store = load_store([folder], CROP)
    sampler = PatchSampler(store.sizes, batch_size=4, patches_per_epoch=28, rotate=True, seed=5)  # 7 batches
    one = list(DevicePatchStream(store, sampler, "cpu").epoch(2))
    got = list(DevicePatchStream(store, sampler, "cpu", chunk=3).epoch(2))  # chunks of 3, 3, 1
    assert len(got) == len(one) == 7
    for a, b in zip(one, got):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="chunk"):
        DevicePatchStream(store, sampler, "cpu", chunk=0)


def test_device_stream_gather_is_the_dihedral_augmentation():
    """Crops gathered in index space equal numpy slicing + flips + transpose, for all 8 elements."""
    from vdsr.data import ImageStore
    from vdsr.data.device_stream import DeviceStore, draw_table, gather_crops

    rng = np.random.default_rng(0)
    store = ImageStore([rng.random((130, 140), dtype=np.float32), rng.random((135, 130), dtype=np.float32)],
                       [Path("a.png"), Path("b.png")])  # fmt: skip
    n = 8
    bits = np.arange(n)
    draws = Draws(image=bits % 2, y=np.full(n, 20), x=np.full(n, 21), scale=np.array([2, 3, 4, 2, 3, 4, 2, 3]),
                  flip_h=(bits & 1) > 0, flip_v=(bits & 2) > 0, transpose=(bits & 4) > 0)  # fmt: skip
    table, groups = draw_table(draws, CROP, PATCH)
    assert [g[0] for g in groups] == [2, 3, 4] and groups[-1][2] == n
    crops = gather_crops(DeviceStore(store, "cpu"), torch.from_numpy(table), CROP)
    ref = torch_crops(store, draws, CROP)[table[:, -1]]  # the table is sorted by scale
    assert torch.equal(crops, ref)
