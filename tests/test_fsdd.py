"""Spoken digits (FSDD): protocols, cached log-mel features, wav reading, training, predict."""

import numpy as np
import pytest
import torch

import archlab
from archlab.cli import main
from archlab.data import fsdd
from archlab.errors import ArchlabError, ConfigError
from archlab.nn.sequence import pool_steps
from archlab.run import load, train
from archlab.tasks.spoken_digits import SpokenDigitsData, SpokenDigitsTask, spectrogram_images
from tests.conftest import require_data

sf = pytest.importorskip("soundfile", reason="the audio extra (soundfile) is not installed")
librosa = pytest.importorskip("librosa", reason="the audio extra (librosa) is not installed")

TINY_CNN = [
    "model.channels=[8,16]", "model.hidden=[64]", "model.dropout=0.0",
    "trainer.max_epochs=3", "trainer.batch_size=64", "trainer.lr=3e-3",
    "trainer.eval_every_epochs=3", "trainer.checkpoint_every_epochs=3", "trainer.log_every=10",
]  # fmt: skip


@pytest.fixture(scope="module")
def recordings():
    require_data("fsdd/recordings/0_george_0.wav")
    return fsdd.recordings()


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# ----- protocols -----


def test_the_dataset_split_tests_takes_0_to_4(recordings) -> None:
    parts = fsdd.split(recordings)
    assert {k: len(v) for k, v in parts.items()} == {"train": 2400, "val": 300, "test": 300}
    assert sorted(sum(parts.values(), [])) == list(range(3000))
    assert {recordings[i].take for i in parts["test"]} == set(range(5))
    assert {recordings[i].take for i in parts["val"]} == set(range(5, 10))
    for digit in range(10):  # 6 speakers x 5 takes of each digit
        assert sum(recordings[i].digit == digit for i in parts["test"]) == 30


@pytest.mark.parametrize("fold", range(6))
def test_leave_one_speaker_out_holds_out_one_speakers_500_files(recordings, fold) -> None:
    parts = fsdd.split(recordings, folds=6, fold=fold)
    speaker = fsdd.SPEAKERS[fold]
    assert len(parts["test"]) == 500
    assert {recordings[i].speaker for i in parts["test"]} == {speaker}
    assert speaker not in {recordings[i].speaker for i in parts["train"] + parts["val"]}
    assert (len(parts["train"]), len(parts["val"])) == (2250, 250)
    assert sorted(sum(parts.values(), [])) == list(range(3000))


def test_a_protocol_fsdd_does_not_have_is_one_sentence(capsys, tmp_path) -> None:
    with pytest.raises(ConfigError, match="data.folds must be 0 .* or 6"):
        SpokenDigitsData(folds=10)
    with pytest.raises(ConfigError, match=r"data.fold must lie in \[0, 6\), got 6"):
        SpokenDigitsData(folds=6, fold=6)
    assert main(["train", "cnn-fsdd", "--folds", "5", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "FSDD has 6 speakers" in err and err.strip().count("\n") == 0


# ----- features -----


def test_log_mel_frames_range_and_gain(recordings) -> None:
    audio = fsdd.read_wav(recordings[0].path)
    features = fsdd.log_mel(audio, n_mels=32)
    assert features.shape == (1 + len(audio) // fsdd.HOP_LENGTH, 32)
    assert features.dtype == np.float32 and features.max() == 1.0 and features.min() >= -1.0
    np.testing.assert_allclose(fsdd.log_mel(0.25 * audio, 32), features, atol=1e-4)


def test_features_are_cached_per_file_hash(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ARCHLAB_CACHE", str(tmp_path / "cache"))
    computed = []
    real = fsdd.log_mel
    monkeypatch.setattr(fsdd, "log_mel", lambda a, n: computed.append(n) or real(a, n))
    wav = tmp_path / "digit.wav"
    sf.write(wav, tone(0.5, 8000), 8000)
    first = fsdd.cached_log_mel(wav, 20)
    second = fsdd.cached_log_mel(wav, 20)  # from the cache
    assert len(computed) == 1 and np.array_equal(first, second)
    sf.write(wav, tone(0.5, 8000, hz=1000.0), 8000)  # new bytes, new hash: computed again
    changed = fsdd.cached_log_mel(wav, 20)
    assert len(computed) == 2 and not np.array_equal(first, changed)
    assert len(list((tmp_path / "cache" / "fsdd").rglob("*.npy"))) == 2


# ----- reading user files -----


def test_stereo_is_down_mixed_and_other_rates_resampled(tmp_path) -> None:
    mono = tone(0.5, 8000)
    sf.write(tmp_path / "stereo.wav", np.stack([mono, 0.5 * mono], 1), 8000, subtype="FLOAT")
    np.testing.assert_allclose(fsdd.read_wav(tmp_path / "stereo.wav"), 0.75 * mono, atol=1e-6)
    sf.write(tmp_path / "fast.wav", tone(1.0, 22050, hz=440.0), 22050)
    audio = fsdd.read_wav(tmp_path / "fast.wav")
    assert len(audio) == 8000
    assert np.argmax(np.abs(np.fft.rfft(audio))) == 440  # 1 Hz bins over one second


def test_bad_sound_files_are_one_sentence_each(tmp_path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("these are not samples\n")
    sf.write(tmp_path / "silent.wav", np.zeros(800, dtype=np.float32), 8000)
    sf.write(tmp_path / "none.wav", np.zeros((0, 1), dtype=np.float32), 8000)
    reasons = {
        "empty.wav": "the file is empty",
        "notes.wav": "cannot be read as a wav file",
        "silent.wav": "holds only silence",
        "none.wav": "(the file is empty|holds no audio)",
        "missing.wav": "no such file",
    }
    for name, reason in reasons.items():
        with pytest.raises(ArchlabError, match=reason):
            fsdd.read_wav(tmp_path / name)


# ----- the task: pooling, images, training, predict -----


@pytest.mark.parametrize("name", ["tcn", "seq_lstm", "seq_transformer"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pooled_logits_do_not_depend_on_the_batchs_padding(name, pooling) -> None:
    model = archlab.create_model(name, in_dim=8, out_dim=10).eval()
    task = SpokenDigitsTask(SpokenDigitsData(n_mels=8, pooling=pooling))
    short, long = torch.randn(5, 8), torch.randn(17, 8)
    with torch.no_grad():
        together = task.logits(model, [short, long])
        alone = torch.cat([task.logits(model, [short]), task.logits(model, [long])])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_pool_steps_by_hand() -> None:
    out = torch.arange(12.0).view(2, 3, 2)
    lengths = torch.tensor([2, 3])
    torch.testing.assert_close(pool_steps(out, lengths, "last"), torch.tensor([[2.0, 3], [10, 11]]))
    torch.testing.assert_close(pool_steps(out, lengths, "mean"), torch.tensor([[1.0, 2], [8, 9]]))


def test_spectrogram_images_stretch_time_to_a_square() -> None:
    ramp = torch.linspace(0, 1, 7)[:, None].expand(7, 4)  # 7 frames of 4 bands
    images = spectrogram_images([ramp, torch.ones(30, 4)], 4)
    assert images.shape == (2, 1, 4, 4)
    assert (images[0, 0].diff(dim=1) > 0).all() and (images[1] == 1).all()


@pytest.fixture(scope="module")
def cnn_run(recordings, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdd") / "run"
    return train("cnn-fsdd", TINY_CNN, out=str(out), progress=False)


def test_a_tiny_cnn_beats_chance_clearly(cnn_run) -> None:
    _, results = cnn_run
    assert results["test"]["accuracy"] > 0.6  # chance is 0.1


def test_a_sequence_encoder_learns(recordings, tmp_path) -> None:
    sets = [
        "model.name=seq_gru", "model.hidden_size=32", "trainer.max_steps=40",
        "trainer.batch_size=64", "trainer.lr=1e-2", "trainer.eval_every=40",
    ]  # fmt: skip
    _, results = train("lstm-fsdd", sets, out=str(tmp_path / "run"), progress=False)
    assert results["test"]["accuracy"] > 0.3  # chance is 0.1


def test_predict_names_the_digit_of_real_and_converted_wavs(cnn_run, recordings, tmp_path, capsys):
    run_dir, _ = cnn_run
    run = load(run_dir)
    test = fsdd.split(recordings)["test"]
    scores = run.task.predict_scores(run.model, [str(recordings[i].path) for i in test])
    good = next(i for i, s in zip(test, scores, strict=True)
                if s.argmax() == recordings[i].digit and s.max() > 0.9)  # fmt: skip
    real = recordings[good]
    audio, rate = sf.read(real.path, dtype="float32")
    sf.write(tmp_path / "stereo.wav", np.stack([audio, audio], 1), rate)
    sf.write(tmp_path / "16k.wav", librosa.resample(audio, orig_sr=rate, target_sr=16000), 16000)
    files = [str(real.path), str(tmp_path / "stereo.wav"), str(tmp_path / "16k.wav")]
    assert main(["predict", str(run_dir), *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(real.digit)] * 3
    assert all(0.5 < float(line.split("\t")[1]) <= 1 for line in lines)


def test_predict_refuses_bad_files_with_one_sentence(cnn_run, tmp_path, capsys) -> None:
    run_dir, _ = cnn_run
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("not a wav")
    for name, reason in (("empty.wav", "the file is empty"), ("notes.wav", "cannot be read")):
        assert main(["predict", str(run_dir), str(tmp_path / name)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.strip().count("\n") == 0
        assert captured.err.startswith(f"archlab: error: {tmp_path / name}: {reason}")
