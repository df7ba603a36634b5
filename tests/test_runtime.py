"""The process's threading and memory policy: applied, read back from each library, recorded in reports."""

import threading

import cv2
import pytest
import torch

from rcdnet import runtime
from rcdnet.runtime import environment


def test_policy_sets_every_library_and_reads_back():
    try:
        s = runtime.apply(1)
        assert (s["threads"], s["torch_intra_op"], s["onnxruntime_intra_op"]) == (1, 1, 1)
        assert s["torch_inter_op"] == 1 and s["opencv"] == 1 == cv2.getNumThreads()
        assert s["malloc"].startswith("glibc mmap threshold 32 MB")  # Linux with glibc, as everywhere rcdnet runs
        assert "1 threads on" in environment()["threads"]
    finally:
        s = runtime.apply()
    assert s["threads"] == s["torch_intra_op"] == torch.get_num_threads() == runtime.cores()


def test_onnx_sessions_follow_the_policy(exported_onnx):
    from rcdnet.models.exported import session

    runtime.apply(1)
    try:
        assert session(exported_onnx).get_session_options().intra_op_num_threads == 1
    finally:
        runtime.apply()


def test_parallel_map_keeps_order_uses_threads_and_raises():
    names = set()

    def work(i):
        names.add(threading.current_thread().name)
        return i * i

    assert list(runtime.parallel_map(work, range(50), workers=2)) == [i * i for i in range(50)]
    assert any(n.startswith("rcdnet-images") for n in names)

    def fail(i):
        if i == 3:
            raise ValueError("bad item 3")
        return i

    with pytest.raises(ValueError, match="bad item 3"):
        list(runtime.parallel_map(fail, range(10), workers=2))
