"""Cross-modal fusion: the av-digits pairs and degradations, each fusion against its formula,
cross-attention against torch.nn.MultiheadAttention, a tiny real run, predict on file pairs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import archlab
from archlab.cli import main
from archlab.data import avdigits, fsdd
from archlab.data.avdigits import PCA, AVDigits, AVDigitsData, add_noise
from archlab.errors import ConfigError
from archlab.models.fusion import stretch
from archlab.run import train
from archlab.tasks.spoken_digits import spectrogram_images
from tests.conftest import require_data

sf = pytest.importorskip("soundfile", reason="the audio extra (soundfile) is not installed")
pytest.importorskip("librosa", reason="the audio extra (librosa) is not installed")

TINY_ENCODERS = dict(
    image={"channels": [4, 8], "hidden": [16], "dropout": 0.0},
    audio={"channels": [4, 8], "hidden": [12], "dropout": 0.0},
    n_mels=16,
    hidden=8,
    n_head=2,
    dropout=0.0,
)


def tiny(fusion: str, **overrides) -> torch.nn.Module:
    return archlab.create_model("fusion", fusion=fusion, **{**TINY_ENCODERS, **overrides}).eval()


def inputs(batch: int = 3, frames: int = 11):
    lengths = torch.tensor([frames, 4, 7][:batch])
    return torch.rand(batch, 1, 28, 28), torch.randn(batch, frames, 16), lengths


# ----- the data -----


@pytest.fixture(scope="module")
def av():
    require_data("mnist/t10k-images-idx3-ubyte.gz")
    require_data("fsdd/recordings/0_george_0.wav")
    return AVDigits(AVDigitsData())


def test_no_image_or_recording_is_in_two_splits(av) -> None:
    s = av.splits
    assert [len(s[k].labels) for k in ("train", "val", "test")] == [55000, 5000, 10000]
    assert not set(s["train"].index.tolist()) & set(s["val"].index.tolist())  # both MNIST train
    takes = {k: {av.recordings[r].take for r in s[k].recording.tolist()} for k in s}
    assert takes == {"train": set(range(10, 50)), "val": set(range(5, 10)), "test": set(range(5))}
    for part in s.values():
        assert (av.rec_digits[part.recording] == part.labels).all()  # the same digit
        uses = torch.bincount(part.recording, minlength=3000)[part.pool]
        assert uses.min() >= 1
        for d in range(10):  # dealt in turn: every recording of a digit used floor or ceil
            of_d = uses[av.rec_digits[part.pool] == d]
            assert of_d.max() - of_d.min() <= 1


def test_the_pairing_is_deterministic_for_a_seed(av) -> None:
    labels, digits = av.splits["val"].labels, av.rec_digits[av.splits["val"].pool]

    def paired(seed: int) -> torch.Tensor:
        return avdigits.pair(labels, digits, torch.Generator().manual_seed(seed))

    assert torch.equal(paired(3), paired(3)) and not torch.equal(paired(3), paired(4))


def test_pca_is_fitted_on_the_training_images_only(monkeypatch) -> None:
    require_data("mnist/t10k-images-idx3-ubyte.gz")
    require_data("fsdd/recordings/0_george_0.wav")
    seen = []
    fit = PCA.fit.__func__
    monkeypatch.setattr(PCA, "fit", classmethod(lambda cls, x: seen.append(x) or fit(cls, x)))
    small = AVDigits(AVDigitsData(train_size=500, val_size=300, test_size=200))
    assert len(seen) == 1 and torch.equal(seen[0], small.splits["train"].images)
    expected = small.splits["train"].images.flatten(1).double().mean(0) / 255
    torch.testing.assert_close(small.pca.mean.double(), expected, atol=1e-6, rtol=0)


def test_pca_degradation_keeps_the_leading_energy_share() -> None:
    images = (torch.rand(400, 6, 6) ** 3 * 255).to(torch.uint8)
    pca = PCA.fit(images)
    share = pca.energy.cumsum(0) / pca.energy.sum()
    for removed in (0.0, 0.5, 0.75, 0.9):
        k = pca.kept(removed)
        assert share[k - 1] >= 1 - removed - 1e-6 and (k == 1 or share[k - 2] < 1 - removed)
    x = images.float() / 255
    torch.testing.assert_close(pca.degrade(images, 0.0), x, atol=1e-4, rtol=0)
    U = pca.components[:, : pca.kept(0.75)]
    by_hand = (pca.mean + (x.flatten(1) - pca.mean) @ U @ U.T).clamp(0, 1).view_as(x)
    torch.testing.assert_close(pca.degrade(images, 0.75), by_hand, atol=1e-5, rtol=0)


def test_noise_is_added_at_the_asked_snr() -> None:
    clean, noise = torch.randn(4000) * 0.3, torch.rand(4000) - 0.5
    for snr in (-10.0, 0.0, 12.5):
        n = add_noise(clean, noise, snr) - clean
        measured = 10 * torch.log10(clean.square().mean() / n.square().mean())
        assert abs(float(measured) - snr) < 1e-3


def test_batched_log_mel_equals_the_per_recording_features() -> None:
    t = np.arange(5000) / 8000
    waves = [np.sin(2 * np.pi * 440 * t[:n]).astype(np.float32) * a for n, a in ((5000, 0.5),
             (1300, 0.1), (137, 0.9))]  # fmt: skip
    padded, lengths = avdigits.pad_waves([torch.from_numpy(w) for w in waves])
    features, frames = fsdd.log_mel_batch(padded, lengths, n_mels=20)
    for i, w in enumerate(waves):
        expected = fsdd.log_mel(w, 20)
        assert int(frames[i]) == len(expected)
        np.testing.assert_allclose(features[i, : len(expected)].numpy(), expected, atol=1e-4)
        assert (features[i, len(expected) :] == -1).all()


def test_each_recording_s_features_are_standardised(av) -> None:
    b = av.batch("val", [0, 1, 2, 3], [0, 1, 2, 3])
    for features, n in zip(b.audio, b.lengths, strict=True):
        real = features[:n]
        assert abs(float(real.mean())) < 1e-4 and abs(float(real.std(unbiased=False)) - 1) < 1e-3
        assert (features[n:] == 0).all()


def test_missing_modalities_are_zeros_with_a_mask(av) -> None:
    rows = [0, 1, 2]
    seeds = av.eval_seeds("test", "image_missing", rows)
    gone = av.batch("test", rows, seeds, "image_missing")
    assert (gone.images == 0).all() and gone.present.tolist() == [[False, True]] * 3
    gone = av.batch("test", rows, av.eval_seeds("test", "audio_missing", rows), "audio_missing")
    assert (gone.audio == 0).all() and gone.present.tolist() == [[True, False]] * 3
    again = av.batch("test", rows, seeds, "clean")
    assert again.present is None and torch.equal(
        again.audio, av.batch("test", rows, seeds, "clean").audio
    )  # eval noise is fixed by its seeds


@pytest.mark.parametrize(
    "setting, message",
    [
        ("data.snr_db=100", r"data.snr_db must lie in \[-30, 60\], got 100"),
        ("data.energy_removed=1.0", r"data.energy_removed must lie in \[0, 1\), got 1"),
        ("data.test_snr_db=5", "data.test_snr_db .* must be at most data.snr_db"),
        ("data.test_energy_removed=0.5", "must be at least data.energy_removed"),
    ],
)
def test_a_bad_snr_or_energy_share_is_one_sentence_and_exit_2(setting, message, capsys) -> None:
    with pytest.raises(ConfigError, match=message):
        AVDigitsData(**{setting.split("=")[0][5:]: float(setting.split("=")[1])})
    assert main(["train", "gmu-avdigits", "--set", setting, "--out", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("archlab: error: ") and err.strip().count("\n") == 0


# ----- the models against their formulas -----


def test_gmu_against_its_formula() -> None:
    model = tiny("gmu")
    image, audio, lengths = inputs()
    out = model(image, audio, lengths)
    x_v = model.encoders["image"](image).features
    x_a = model.encoders["audio"](audio, lengths).features
    g = model.gmu
    h_v, h_a = torch.tanh(x_v @ g.W_v.weight.T), torch.tanh(x_a @ g.W_a.weight.T)
    z = torch.sigmoid(torch.cat([x_v, x_a], 1) @ g.W_z.weight.T)
    h = z * h_v + (1 - z) * h_a
    torch.testing.assert_close(out.logits, h @ model.W_o.weight.T + model.W_o.bias)
    torch.testing.assert_close(out.gate, torch.stack([z.mean(1), 1 - z.mean(1)], 1))
    # audio missing: z = 1 and x_a = 0, so h = h_v
    alone = model(image, audio, lengths, torch.tensor([[True, False]] * 3))
    torch.testing.assert_close(alone.logits, h_v @ model.W_o.weight.T + model.W_o.bias)
    assert (alone.gate[:, 0] == 1).all()


def test_centralnet_against_its_formula() -> None:
    model = tiny("central")
    with torch.no_grad():
        model.central.alpha_M.uniform_(0.2, 2.0)
        model.central.alpha_C.uniform_(0.2, 2.0)
    image, audio, lengths = inputs()
    s_v = model.encoders["image"](image).stages
    s_a = model.encoders["audio"](audio, lengths).stages
    c = model.central
    K = len(c.W)
    assert K == min(len(s_v), len(s_a)) == 3  # two pooled feature maps and the features

    def lin(layer, x):
        return x @ layer.weight.T + layer.bias

    h = None
    for i in range(K):
        u_v, u_a = lin(c.P_v[i], s_v[-K + i]), lin(c.P_a[i], s_a[-K + i])
        z = c.alpha_M[i, 0] * u_v + c.alpha_M[i, 1] * u_a
        if i > 0:
            z = z + c.alpha_C[i - 1] * h
        h = torch.relu(lin(c.W[i], z))
    torch.testing.assert_close(model(image, audio, lengths).logits, lin(model.W_o, h))


def test_cross_attention_against_torch_multihead_attention() -> None:
    model = tiny("xattn")
    image, audio, lengths = inputs()
    T_v = model.encoders["image"](image).tokens
    enc_a = model.encoders["audio"](audio, lengths)
    x = model.xattn
    V, A = x.P_v(T_v), x.P_a(enc_a.tokens)
    nv, na = x.ln_v(V), x.ln_a(A)

    def reference(ours):
        ref = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        with torch.no_grad():
            ref.in_proj_weight.copy_(ours.W_qkv.weight)
            ref.in_proj_bias.copy_(ours.W_qkv.bias)
            ref.out_proj.weight.copy_(ours.W_o.weight)
            ref.out_proj.bias.copy_(ours.W_o.bias)
        return ref.eval()

    pad = torch.arange(A.shape[1])[None, :] >= lengths[:, None]
    V2 = V + reference(x.attn_va)(nv, na, na, key_padding_mask=pad, need_weights=False)[0]
    A2 = A + reference(x.attn_av)(na, nv, nv, need_weights=False)[0]
    real = (~pad).float()[..., None]
    V2, A2 = x.ln_out_v(V2), x.ln_out_a(A2)
    pooled = torch.cat([V2.mean(1), (A2 * real).sum(1) / real.sum(1)], 1)
    expected = pooled @ model.W_o.weight.T + model.W_o.bias
    torch.testing.assert_close(model(image, audio, lengths).logits, expected, atol=1e-5, rtol=1e-5)


def test_cross_attention_keeps_a_present_modality_s_scale_when_the_other_is_missing() -> None:
    # Trained with both modalities, the attention (fed layer-normed tokens) carries the
    # signal and the encoders' own tokens shrink: in xattn-avdigits they varied 30-50
    # times less across examples than the attention's output.  Pooled without a final
    # LayerNorm, a modality alone then gave the classifier almost nothing (about 20 %
    # test accuracy with either modality missing).  Shrink the tokens as training did.
    model = tiny("xattn")
    x = model.xattn
    with torch.no_grad():
        for P in (x.P_v, x.P_a):
            P.weight.mul_(1e-2)
            P.bias.mul_(1e-2)
    image, audio, lengths = inputs()
    T_v = model.encoders["image"](image).tokens
    enc_a = model.encoders["audio"](audio, lengths)
    d = x.ln_v.normalized_shape[0]

    def halves(present):
        pooled = x(T_v, enc_a.tokens, enc_a.padding, torch.tensor([present] * 3))
        return pooled[:, :d].norm(dim=1), pooled[:, d:].norm(dim=1)

    v_both, a_both = halves([True, True])
    v_alone, _ = halves([True, False])
    _, a_alone = halves([False, True])
    for alone, both in ((v_alone, v_both), (a_alone, a_both)):
        assert (alone > 0.2 * both).all() and (alone < 5 * both).all(), (alone, both)


@pytest.mark.parametrize("rule", ["mean", "poe"])
def test_late_fusion_averages_or_multiplies_the_present_experts(rule) -> None:
    model = tiny("late", late_rule=rule)
    image, audio, lengths = inputs()
    y_v = model.encoders["image"](image).logits
    y_a = model.encoders["audio"](audio, lengths).logits
    out = model(image, audio, lengths, torch.tensor([[True, True], [True, False], [False, True]]))
    if rule == "mean":
        expected = torch.stack([(y_v[0] + y_a[0]) / 2, y_v[1], y_a[2]])
    else:
        lv, la = y_v.log_softmax(-1), y_a.log_softmax(-1)
        expected = torch.stack([lv[0] + la[0], lv[1], la[2]])
    torch.testing.assert_close(out.logits, expected)


def test_modality_dropout_drops_one_modality_in_training_only() -> None:
    model = tiny("early", modality_dropout=0.999).train()
    image, audio, lengths = (t.repeat(20, *[1] * (t.dim() - 1)) for t in inputs())
    present = model(image, audio, lengths).present
    assert (present.sum(1) == 1).all() and present[:, 0].any() and present[:, 1].any()
    assert model.eval()(image, audio, lengths).present.all()


def test_the_audio_cnn_sees_the_spectrogram_task_s_images() -> None:
    frames = [torch.randn(n, 16) for n in (30, 16, 5)]
    padded = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True, padding_value=-1)
    ours = stretch(padded, torch.tensor([30, 16, 5]), 16)
    torch.testing.assert_close(ours, spectrogram_images(frames, 16), atol=1e-6, rtol=0)


@pytest.mark.parametrize("encoder", ["tcn", "seq_gru"])
def test_sequence_encoders_ignore_the_batch_s_padding(encoder) -> None:
    audio = {"channels": [6, 6], "kernel_size": 3} if encoder == "tcn" else {"hidden_size": 6}
    model = tiny("xattn", audio_encoder=encoder, audio=audio)
    image, frames, lengths = inputs()
    together = model(image, frames, lengths).logits
    alone = torch.cat(
        [model(image[i : i + 1], frames[i : i + 1, : lengths[i]]).logits for i in range(3)]
    )
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_an_encoder_size_the_fusion_sets_is_refused() -> None:
    with pytest.raises(ConfigError, match="fusion.image.input_size is set by the fusion model"):
        archlab.create_model("fusion", image={"input_size": 32})
    with pytest.raises(ConfigError, match="unknown key fusion.audio.chanels for the tcn encoder"):
        archlab.create_model("fusion", audio_encoder="tcn", audio={"chanels": [4]})


# ----- a tiny real run, and predict -----

TINY_RUN = [
    "data.train_size=3000", "data.val_size=300", "data.test_size=300",
    "model.image={channels: [8, 16], hidden: [32], dropout: 0.0}",
    "model.audio={channels: [8, 16], hidden: [32], dropout: 0.0}",
    "model.hidden=32", "trainer.max_epochs=3", "trainer.eval_every=141",
    "trainer.checkpoint_every=141", "trainer.lr=3e-3",
]  # fmt: skip


@pytest.fixture(scope="module")
def gmu_run(tmp_path_factory):
    require_data("mnist/t10k-images-idx3-ubyte.gz")
    require_data("fsdd/recordings/0_george_0.wav")
    out = tmp_path_factory.mktemp("avdigits") / "run"
    return train("gmu-avdigits", TINY_RUN, out=str(out), progress=False)


def test_a_tiny_fusion_learns_and_reports_every_condition(gmu_run) -> None:
    _, results = gmu_run
    test = results["test"]
    assert test["accuracy"] > 0.4  # chance is 0.1
    assert {f"accuracy_{c}" for c in avdigits.CONDITIONS[1:]} <= set(test)
    assert test["accuracy_image_missing"] < test["accuracy"]


@pytest.fixture(scope="module")
def pair_files(gmu_run, tmp_path_factory):
    from PIL import Image

    from archlab.data.mnist import load_mnist

    folder = tmp_path_factory.mktemp("pair")
    images, labels = load_mnist("test")
    i = int((labels == 7).nonzero()[0])
    Image.fromarray(images[i].numpy()).save(folder / "seven.png")
    wav = require_data("fsdd/recordings/7_jackson_0.wav") / "fsdd/recordings/7_jackson_0.wav"
    (folder / "notes.txt").write_text("not an image and not a sound")
    return folder / "seven.png", wav, folder / "notes.txt"


def test_predict_prints_the_digit_its_probability_and_the_gate(gmu_run, pair_files, capsys):
    run_dir, _ = gmu_run
    png, wav, _ = pair_files
    assert main(["predict", str(run_dir), str(png), str(wav)]) == 0
    fields = capsys.readouterr().out.strip().split("\t")
    assert fields[0] in [str(d) for d in range(10)] and 0.1 <= float(fields[1]) <= 1
    image_w, audio_w = (float(f.split("=")[1]) for f in fields[2:4])
    assert fields[2].startswith("gate_image=") and abs(image_w + audio_w - 1) < 1e-4
    assert fields[4] == f"{png} {wav}"


@pytest.mark.parametrize(
    "which, message",
    [
        ("one file", "predicts from groups of 2 files, IMAGE AUDIO in that order; got 1 file"),
        ("missing image", "the image .*missing.png: no such file"),
        ("not an image", "the image .*notes.txt: cannot be read as an image"),
        ("not a wav", "the sound .*seven.png: cannot be read as a wav file"),
        ("missing sound", "the sound .*gone.wav: no such file"),
    ],
)
def test_predict_refuses_a_bad_pair_with_one_sentence(gmu_run, pair_files, which, message, capsys):
    run_dir, _ = gmu_run
    png, wav, notes = pair_files
    args = {
        "one file": [png],
        "missing image": [png.with_name("missing.png"), wav],
        "not an image": [notes, wav],
        "not a wav": [png, png],
        "missing sound": [png, wav.with_name("gone.wav")],
    }[which]
    assert main(["predict", str(run_dir), *map(str, args)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().count("\n") == 0
    assert captured.err.startswith("archlab: error: ")
    import re

    assert re.search(message, captured.err), captured.err


def test_loss_adds_the_auxiliary_losses_of_present_modalities() -> None:
    from archlab.models.fusion import FusionOutput
    from archlab.tasks.av_digits import AVDigitsTask

    model = tiny("central", aux_weight=0.5)
    logits, uni = torch.randn(2, 10), torch.randn(2, 2, 10)
    present = torch.tensor([[True, True], [True, False]])
    labels = torch.tensor([3, 4])
    loss = AVDigitsTask._loss(model, FusionOutput(logits, uni, present, None), labels)
    ce = F.cross_entropy
    aux = ce(uni[:1, 0], labels[:1]) + ce(uni[:1, 1], labels[:1]) + ce(uni[1:, 0], labels[1:])
    torch.testing.assert_close(loss, ce(logits, labels) + 0.5 * aux / 2)
