"""_crops.Pool: batches queued and decoded by lasting threads give decode_batch's pixels, end when cancelled,
and refuse what they cannot hold."""

from __future__ import annotations

import numpy as np
import pytest

from how_to_imagenet.transforms import FastVal, crops_module, image_size

from .test_transforms import jpeg

crops = crops_module()
pytestmark = pytest.mark.skipif(crops is None, reason="the extension was not built")
SIZE = 32
PLAIN = ((0.0,) * 3, (1.0,) * 3)


def batch(count: int, seed: int = 0, scale: int = 1) -> tuple[list[bytes], np.ndarray]:
    """`count` JPEGs of different sizes (`scale` times about 130 x 95) and their val plans, as decode_batch
    takes them."""
    jpegs = [jpeg(scale * (120 + 8 * (i % 5)), scale * (90 + 6 * (i % 3)), seed=seed + i) for i in range(count)]
    plans = [FastVal(size=SIZE, resize=40).plan(*image_size(j)[:2]).row(*image_size(j)[:2]) for j in jpegs]
    return jpegs, np.array(plans, np.float64)


def decoded(jpegs: list[bytes], params: np.ndarray) -> np.ndarray:
    out = np.zeros((len(jpegs), SIZE, SIZE, 3), np.uint8)
    assert crops.decode_batch(jpegs, params, out, SIZE, 0, 0, 1, *PLAIN) == bytes([crops.OK]) * len(jpegs)
    return out


def test_batches_waited_in_any_order_hold_decode_batchs_pixels():
    pool = crops.Pool(2)
    batches = [batch(n, seed=10 * k) for k, n in enumerate((7, 1, 12, 0))]
    outs = [np.zeros((max(len(j), 1), SIZE, SIZE, 3), np.uint8) for j, _ in batches]
    tickets = [pool.submit(j, p, out, SIZE, 0, 0, *PLAIN) for (j, p), out in zip(batches, outs, strict=True)]
    for k in (2, 0, 3, 1):
        jpegs, params = batches[k]
        assert pool.wait(tickets[k]) == bytes([crops.OK]) * len(jpegs)
        if jpegs:
            assert np.array_equal(outs[k][:len(jpegs)], decoded(jpegs, params))
    with pytest.raises(ValueError, match="no batch"):
        pool.wait(tickets[0])  # each ticket ends once


def test_cancelled_images_are_left_and_their_batches_still_end():
    pool = crops.Pool(1)
    jpegs, params = batch(5, scale=6)
    many = jpegs * 400  # seconds of decode for one thread: the cancel comes long before its end
    out = np.zeros((len(many), SIZE, SIZE, 3), np.uint8)
    ticket = pool.submit(many, np.tile(params, (400, 1)), out, SIZE, 0, 0, *PLAIN)
    pool.cancel()
    status = pool.wait(ticket)
    assert set(status) <= {crops.OK, crops.CANCELLED} and status.count(crops.CANCELLED) > len(many) // 2
    done = [i for i, s in enumerate(status) if s == crops.OK]
    assert np.array_equal(out[done], decoded([many[i] for i in done], np.tile(params, (400, 1))[done]))
    ticket = pool.submit(jpegs, params, out, SIZE, 0, 0, *PLAIN)  # the pool goes on after a cancel
    assert pool.wait(ticket) == bytes([crops.OK]) * len(jpegs)


def test_what_the_pool_cannot_hold_is_refused_and_a_closed_pool_takes_nothing():
    pool = crops.Pool(1)
    jpegs, params = batch(3)
    small = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    with pytest.raises(ValueError, match="out hold"):
        pool.submit(jpegs, params, small, SIZE, 0, 0, *PLAIN)
    with pytest.raises(BufferError, match="not writable"):
        pool.submit(jpegs, params, bytes(3 * SIZE * SIZE * 3), SIZE, 0, 0, *PLAIN)
    with pytest.raises(ValueError, match="threads"):
        crops.Pool(0)
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(jpegs, params, np.zeros((3, SIZE, SIZE, 3), np.uint8), SIZE, 0, 0, *PLAIN)
