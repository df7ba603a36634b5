"""Frames from DICOM (built with pydicom from real BUSI images) and video (built with PyAV), through
``read_frames`` and ``rcdnet predict``; no patient data in any output."""

import json

import av
import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    RLELossless,
    UltrasoundImageStorage,
    generate_uid,
)

from rcdnet.cli import main
from rcdnet.data.decode import (
    ImageReadError,
    IncompleteVideo,
    kind_of,
    read_frames,
    read_image,
    to_gray,
)
from tests.conftest import BUSI

SECRET_NAME, SECRET_ID = "Doe^Jane", "PID-SECRET-4711"


def _real(i=1) -> np.ndarray:
    return read_image(BUSI / "malignant" / f"malignant ({i}).png")


def make_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", compress: bool = False):
    """An ultrasound DICOM with patient data in the header; ``pixels`` (H, W), (H, W, 3) or (F, H, W[, 3])."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = SECRET_NAME, SECRET_ID, "US"
    colour = photometric in ("RGB", "YBR_FULL")
    multi = pixels.ndim == (4 if colour else 3)
    if multi:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[int(multi)], pixels.shape[int(multi) + 1]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if compress:
        ds.compress(RLELossless)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_dicom_monochrome_rgb_ybr_multiframe_and_rle(tmp_path, data_root):
    rgb = _real()
    gray = to_gray(rgb)
    f = next(read_frames(make_dicom(tmp_path / "mono.dcm", gray)))
    assert np.array_equal(f.rgb[..., 0], gray)
    f = next(read_frames(make_dicom(tmp_path / "rgb.dcm", rgb, "RGB")))
    assert np.array_equal(f.rgb, rgb)
    from pydicom.pixels import convert_color_space

    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    f = next(read_frames(make_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL")))
    assert np.abs(f.rgb.astype(int) - rgb).max() <= 3  # colour-space rounding only
    clip = np.stack([to_gray(_real(i)[:400, :400]) for i in (1, 2, 3)])
    frames = list(read_frames(make_dicom(tmp_path / "multi.dcm", clip)))
    assert len(frames) == 3 and [fr.index for fr in frames] == [0, 1, 2]
    assert np.array_equal(frames[2].rgb[..., 0], clip[2])
    f = next(read_frames(make_dicom(tmp_path / "rle.dcm", gray, compress=True)))
    assert np.array_equal(f.rgb[..., 0], gray)
    inverted = (65535 - gray.astype(np.uint16) * 257).astype(np.uint16)  # 16-bit, 0 = white
    f = next(read_frames(make_dicom(tmp_path / "mono1.dcm", inverted, "MONOCHROME1")))
    assert np.abs(f.rgb[..., 0].astype(int) - gray).max() <= 1


def test_dicom_without_suffix_is_recognised_and_garbage_is_named(tmp_path, data_root):
    p = make_dicom(tmp_path / "IM0001", to_gray(_real()))
    assert kind_of(p) == "dicom"
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    with pytest.raises(ImageReadError, match="broken.dcm"):
        list(read_frames(bad))


def make_video(path, frames: list[np.ndarray], fps: int = 10, faststart: bool = False):
    """An mp4 of real pictures; ``faststart`` puts the frame index first, so a cut-off copy still opens."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as out:
        stream = out.add_stream("mpeg4", rate=fps)
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"qscale": "2"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_video_frames(tmp_path, data_root):
    frames = [_real(i)[:320, :400] for i in range(1, 11)]
    got = list(read_frames(make_video(tmp_path / "clip.mp4", frames)))
    assert len(got) == 10
    assert got[3].time == pytest.approx(0.3, abs=0.01)
    assert np.abs(got[3].rgb.astype(int) - frames[3]).mean() < 6  # lossy codec, same picture


def truncated_video(path, n: int = 10) -> bytes:
    """The first 60 % of the bytes of an n-frame clip whose container declares n frames."""
    data = make_video(path, [_real(i)[:320, :400] for i in range(1, n + 1)], faststart=True).read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path.read_bytes()


def test_truncated_video_keeps_its_frames_and_says_it_ended_early(tmp_path, untrained_checkpoint, data_root, capsys):
    clip = tmp_path / "cut.mp4"
    truncated_video(clip)
    got = []
    with pytest.raises(IncompleteVideo, match=r"cut\.mp4: video ended after \d+ frames of the 10"):
        for fr in read_frames(clip):
            got.append(fr)
    assert 0 < len(got) < 10
    assert len(list(read_frames(clip, max_frames=1))) == 1  # asking for fewer frames than decoded is no problem
    assert main(["predict", str(untrained_checkpoint), str(clip), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["predictions"][0]["frames"] == len(got)
    assert f"incomplete {clip}" in captured.err and "1 predicted, 0 skipped" in captured.err


def test_predict_command_on_dicom_and_video_writes_no_patient_data(untrained_checkpoint, tmp_path, data_root, capsys):
    (tmp_path / "in").mkdir()
    make_dicom(tmp_path / "in" / "study.dcm", to_gray(_real()))
    make_dicom(tmp_path / "in" / "cine.dcm", np.stack([to_gray(_real(i)[:400, :400]) for i in (1, 2, 3, 4)]))
    make_video(tmp_path / "in" / "clip.mp4", [_real(i)[:320, :400] for i in range(1, 9)])
    (tmp_path / "in" / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(untrained_checkpoint), str(tmp_path / "in"), "--format", "csv", "--out",
                 str(out)]) == 0
    captured = capsys.readouterr()
    text = out.read_text()
    assert "study.dcm" in text and "cine.dcm" in text and "clip.mp4" in text
    rows = {r.split(",")[0].rsplit("/", 1)[-1]: r.split(",") for r in text.splitlines()[1:]}
    assert rows["cine.dcm"][-1] == "4" and rows["clip.mp4"][-1] == "8" and rows["study.dcm"][-1] == "1"
    per_frame = (tmp_path / "clip.mp4.frames.csv").read_text().splitlines()
    assert per_frame[0] == "frame,time_s,p_malignant,p_malignant_smoothed" and len(per_frame) == 9
    assert "bad.dcm" in captured.err
    everything = text + captured.out + captured.err + "".join(f.read_text() for f in tmp_path.glob("*.csv"))
    assert main(["predict", str(untrained_checkpoint), str(tmp_path / "in" / "study.dcm"), "--format", "json"]) == 0
    js = capsys.readouterr()
    assert json.loads(js.out)["predictions"][0]["frames"] == 1
    everything += js.out + js.err
    assert SECRET_NAME not in everything and "Doe" not in everything and SECRET_ID not in everything


def test_real_scanner_dicom_files_compressed_and_not(untrained_checkpoint, capsys):
    """Files from real ultrasound devices (pydicom-data): uncompressed RGB, the same frame as lossless and lossy
    JPEG 2000 (YBR_RCT / YBR_ICT), and a 16-bit palette-colour ALOKA image."""
    from pydicom.data import get_testdata_file

    files = {n: get_testdata_file(n) for n in ("US1_UNCR.dcm", "US1_J2KR.dcm", "US1_J2KI.dcm", "gdcm-US-ALOKA-16.dcm")}
    assert all(files.values()), f"pydicom-data is not installed: {files}"
    frames = {n: list(read_frames(p)) for n, p in files.items()}
    assert all(len(f) == 1 for f in frames.values())
    plain = frames["US1_UNCR.dcm"][0].rgb
    assert plain.shape == (480, 640, 3) and plain.dtype == np.uint8 and plain.std() > 10
    assert np.array_equal(frames["US1_J2KR.dcm"][0].rgb, plain)  # lossless: the very same pixels
    lossy = frames["US1_J2KI.dcm"][0].rgb.astype(int)
    assert 0 < np.abs(lossy - plain).mean() < 3  # lossy: close, not equal
    aloka = frames["gdcm-US-ALOKA-16.dcm"][0].rgb
    assert aloka.shape == (480, 640, 3) and aloka.dtype == np.uint8 and aloka.std() > 10
    capsys.readouterr()
    assert main(["predict", str(untrained_checkpoint), *map(str, files.values()), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["predictions"]) == 4 and not out["errors"]
    by_name = {p["image"].rsplit("/", 1)[-1]: p["p_malignant"] for p in out["predictions"]}
    assert by_name["US1_UNCR.dcm"] == by_name["US1_J2KR.dcm"]


def test_mutated_dicom_and_video_files_are_per_file_errors_never_crashes(tmp_path, data_root):
    """A seeded slice of the decoder fuzz (scripts/fuzz_decoders.py runs thousands): every damaged file either
    decodes or is an ImageReadError naming it; nothing else escapes."""
    from pydicom.data import get_testdata_file

    from scripts.fuzz_decoders import mutate

    rng = np.random.default_rng(0)
    sources = [get_testdata_file(n) for n in ("US1_J2KR.dcm", "US1_UNCR.dcm", "gdcm-US-ALOKA-16.dcm")]
    clip = make_video(tmp_path / "clip.mp4", [_real(i)[:160, :200] for i in range(1, 4)]).read_bytes()
    cases = [(f"case{i}.dcm", mutate(open(f, "rb").read(), rng)) for f in sources for i in range(25)]
    cases += [(f"case{i}.mp4", mutate(clip, rng, head=len(clip))) for i in range(25)]
    real = open(sources[0], "rb").read()
    k = real.index(b"\x02\x00\x10\x00UI")  # the transfer syntax's value representation, made unknown
    cases.append(("unknown_vr.dcm", real[:k + 4] + b"U." + real[k + 6:]))  # pydicom: NotImplementedError
    outcomes = {"decoded": 0, "refused": 0}
    for name, data in cases:
        try:
            for _ in read_frames(name, data, max_frames=3):
                pass
            outcomes["decoded"] += 1
        except ImageReadError as exc:
            assert name in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 10 and sum(outcomes.values()) == len(cases)


def test_a_damaged_file_does_not_sink_the_batch(untrained_checkpoint, tmp_path, data_root, capsys):
    folder = tmp_path / "batch"
    folder.mkdir()
    for i in (1, 2, 3):
        (folder / f"good{i}.png").write_bytes((BUSI / "benign" / f"benign ({i}).png").read_bytes())
    (folder / "bad.dcm").write_bytes(b"hello, not a DICOM file" * 20)
    (folder / "worse.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    assert main(["predict", str(untrained_checkpoint), str(folder), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert sorted(p["image"].rsplit("/", 1)[-1] for p in json.loads(captured.out)["predictions"]) == [
        "good1.png", "good2.png", "good3.png"]
    assert "bad.dcm: not a DICOM file" in captured.err and "worse.dcm" in captured.err
    assert "3 predicted, 2 skipped" in captured.err


def _png(width: int, height: int, rows: int, interlace: int = 0) -> bytes:
    """A grey PNG whose header says ``width`` x ``height`` and whose data hold ``rows`` rows."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data = zlib.compress(b"".join(b"\0" + bytes([128]) * width for _ in range(rows)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, interlace))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_a_png_that_holds_fewer_rows_than_it_promises_is_refused_not_padded(tmp_path):
    with pytest.raises(ImageReadError, match=r"lie\.png: truncated PNG: it holds 100 of the 4000 rows"):
        read_image("lie.png", _png(400, 4000, 100))
    assert read_image("whole.png", _png(400, 300, 300)).shape == (300, 400, 3)
    (tmp_path / "lie.png").write_bytes(_png(400, 4000, 100))
    with pytest.raises(ImageReadError, match="truncated PNG"):
        read_image(tmp_path / "lie.png")
    assert read_image(BUSI / "benign" / "benign (1).png").ndim == 3  # a real file passes


def test_blank_pictures_get_no_diagnosis_and_blank_frames_are_skipped(untrained_checkpoint, tmp_path, data_root,
                                                                       capsys):
    import cv2

    cv2.imwrite(str(tmp_path / "black.png"), np.zeros((300, 400), np.uint8))
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((300, 400), 120, np.uint8) + (np.arange(400) % 3)[None])
    frames = [np.zeros((160, 200, 3), np.uint8)] * 3 + [_real(i)[:160, :200] for i in range(1, 5)]
    make_video(tmp_path / "clip.mp4", frames)
    (tmp_path / "good.png").write_bytes((BUSI / "benign" / "benign (2).png").read_bytes())
    assert main(["predict", str(untrained_checkpoint), str(tmp_path), "--format", "json"]) == 0
    captured = capsys.readouterr()
    got = {p["image"].rsplit("/", 1)[-1]: p for p in json.loads(captured.out)["predictions"]}
    assert set(got) == {"clip.mp4", "good.png"} and got["clip.mp4"]["frames"] == 4  # the 3 black frames skipped
    for name in ("black.png", "grey.png"):
        assert f"{name}: no image content (the picture is blank" in captured.err
    assert "not an ultrasound image" in captured.err and "2 predicted, 2 skipped" in captured.err


PEAK = """
import sys
from rcdnet.data.decode import read_frames
n = sum(1 for _ in read_frames(sys.argv[1]))
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(n, int(hwm.split()[1]) // 1024)
"""  # VmHWM: this process's own peak (ru_maxrss would also count the parent's memory a fork started from)


def test_dicom_bombs_are_decoded_frame_by_frame_or_refused_before_decoding(tmp_path, data_root):
    import subprocess
    import sys

    import cv2

    from scripts.fuzz_decoders import jpeg, make_jpeg_dicom

    big = cv2.resize(_real(1), (2000, 2000))  # 99 colour frames of 4 MP: 396 MP, just under the per-file limit
    bomb = make_jpeg_dicom(tmp_path / "frames.dcm", jpeg(big), 2000, 2000, 99)
    out = subprocess.run([sys.executable, "-c", PEAK, str(bomb)], capture_output=True, text=True, timeout=600)
    frames, peak_mb = map(int, out.stdout.split())
    assert frames == 99 and peak_mb < 1000, (frames, peak_mb)  # all 99 frames at once would hold 1.2 GB of RGB
    small = bytearray(jpeg(_real(2)[:64, :64]))  # a 64 x 64 JPEG whose frame header is made to say 20000 x 20000
    k = small.index(b"\xff\xc0")
    small[k + 5:k + 9] = (20000).to_bytes(2, "big") * 2
    liar = make_jpeg_dicom(tmp_path / "liar.dcm", bytes(small), 64, 64, 1)
    with pytest.raises(ImageReadError, match=r"liar\.dcm: frame 0 is 20000x20000 pixels but the DICOM header says 64x64"):
        list(read_frames(liar))


def test_two_clips_of_one_name_keep_their_own_per_frame_results(untrained_checkpoint, tmp_path, data_root, capsys,
                                                                 monkeypatch):
    for folder, n in (("left", 3), ("right", 5)):
        (tmp_path / folder).mkdir()
        make_video(tmp_path / folder / "clip.mp4", [_real(i)[:160, :200] for i in range(1, n + 1)])
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(untrained_checkpoint), "left", "right"]) == 0
    capsys.readouterr()
    written = sorted(tmp_path.glob("*.frames.csv"))
    assert [p.name.split("_")[-2] for p in written] == ["left", "right"]
    assert [len(p.read_text().splitlines()) - 1 for p in written] == [3, 5]


def test_16_bit_pictures_map_like_8_bit_ones_and_unknown_scales_are_refused(tmp_path, data_root):
    from PIL import Image

    gray = to_gray(_real(3))
    Image.fromarray((gray.astype(np.uint16) * 257)).save(tmp_path / "wide.png")  # the same picture in 16 bits
    assert Image.open(tmp_path / "wide.png").mode.startswith("I;16")
    assert np.array_equal(read_image(tmp_path / "wide.png")[..., 0], gray)  # not stretched: the same pixels
    Image.fromarray((gray.astype(np.uint16) * 16)).save(tmp_path / "twelve.png")  # 12-bit values in 16 bits
    with pytest.raises(ImageReadError, match=r"twelve\.png: 16-bit pixels that use only 12 bits"):
        read_image(tmp_path / "twelve.png")
    Image.fromarray(gray.astype(np.float32) / 255).save(tmp_path / "float.tif")
    with pytest.raises(ImageReadError, match=r"float\.tif: floating-point pixels"):
        read_image(tmp_path / "float.tif")
